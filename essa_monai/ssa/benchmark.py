"""Side-by-side SSA cost of every PEFT method: peak memory, step time, throughput, trainable parameters.

Each method runs in its own Python process (so one method's allocations cannot inflate another's peak),
one after the other in the same invocation (so they share the machine state), driving the real
:class:`~essa_monai.ssa.SSATrainer` on a fixed synthetic multi-crop batch. Ratios are to full SSA
measured in the same run.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` over the whole run (model, teacher, optimizer
state, activations); on CPU, the process's peak resident set size (``ru_maxrss``), which also counts
the Python and PyTorch runtime, so the table gives the peak above the RSS measured just before the
model is built, too.
"""

from __future__ import annotations

import csv
import json
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events

__all__ = ["DEFAULT_METHODS", "measure_method", "run_benchmark", "write_results", "format_results"]

#: label -> PEFT spec; ``apla r`` uses ``apla_r`` rows.
DEFAULT_METHODS = ("full", "apla", "apla_r", "lora", "bitfit", "vpt")


def method_spec(label: str, apla_r: int, lora_r: int, vpt_tokens: int) -> dict[str, Any]:
    specs = {
        "full": {"method": "full"},
        "apla": {"method": "apla"},
        "apla_r": {"method": "apla", "r": apla_r},
        "lora": {"method": "lora", "r": lora_r},
        "bitfit": {"method": "bitfit"},
        "vpt": {"method": "vpt", "num_tokens": vpt_tokens, "deep": True},
    }
    if label not in specs:
        raise ValueError(f"unknown benchmark method {label!r}; choose from {', '.join(specs)}")
    return specs[label]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def measure_method(
    peft: dict[str, Any],
    backbone: str = "vit_small_patch14_dinov2",
    img_size: int = 224,
    local_size: int = 98,
    n_local: int = 8,
    batch_size: int = 8,
    steps: int = 5,
    warmup_steps: int = 2,
    n_prototypes: int = 65536,
    precision: str = "fp32",
    device: str = "auto",
    backbone_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``warmup_steps + steps`` SSA iterations in this process and measure the last ``steps``."""
    from ..backbone import create_backbone
    from ..peft import count_parameters
    from . import DINOv2Objective, SSANetwork, SSATrainer, ssa_parameter_groups
    from ..ssl import MaskingGenerator, sample_ibot_masks

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    torch.manual_seed(0)
    rss_before = _current_rss_mib()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random init is fine for cost measurements
        net = create_backbone(backbone, img_size=img_size, **(backbone_kwargs or {}))
    student = SSANetwork(net, n_prototypes=n_prototypes, peft=peft)
    optimizer = torch.optim.AdamW(ssa_parameter_groups(student), lr=1e-4)
    grid = img_size // 14
    batch = {
        "global_crops": torch.randn(2 * batch_size, 3, img_size, img_size),
        "local_crops": torch.randn(n_local * batch_size, 3, local_size, local_size) if n_local else None,
        **sample_ibot_masks(2 * batch_size, MaskingGenerator((grid, grid), max_num_patches=0.5 * grid * grid)),
    }
    loader = [batch] * (warmup_steps + steps)
    trainer = SSATrainer(dev, 1, loader, student, DINOv2Objective(n_prototypes), optimizer,
                         freeze_last_layer_epochs=0, precision=precision)
    times: list[float] = []

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    @trainer.on(Events.ITERATION_STARTED)
    def start(engine) -> None:
        sync()
        engine.state.t0 = time.perf_counter()

    @trainer.on(Events.ITERATION_COMPLETED)
    def stop(engine) -> None:
        sync()
        times.append(time.perf_counter() - engine.state.t0)

    trainer.run()
    measured = times[warmup_steps:]
    step_time = sum(measured) / len(measured)
    trainable, total = count_parameters(student.backbone)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else _peak_rss_mib()
    return {
        "peft": json.dumps(peft, sort_keys=True),
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "peak_memory_mib": round(peak, 1),
        "peak_above_baseline_mib": round(peak - (0.0 if dev.type == "cuda" else rss_before), 1),
        "step_time_s": round(step_time, 4),
        "images_per_s": round(batch_size / step_time, 3),
        "trainable_backbone_params": trainable,
        "total_backbone_params": total,
        "loss": round(float(trainer.state.output["loss"]), 4),
    }


def run_benchmark(
    methods: tuple[str, ...] | list[str] = DEFAULT_METHODS,
    apla_r: int = 128,
    lora_r: int = 4,
    vpt_tokens: int = 10,
    timeout_s: float = 3600.0,
    **measure_kwargs: Any,
) -> list[dict[str, Any]]:
    """Measure each method in a fresh subprocess, one after the other; add ratios to ``full``.

    Methods that fail (e.g. out of memory) get a row with ``error`` instead of numbers.
    """
    rows = []
    for label in methods:
        spec = method_spec(label, apla_r, lora_r, vpt_tokens)
        payload = json.dumps({"peft": spec, **measure_kwargs})
        print(f"[benchmark] {label}: {spec} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(
            [sys.executable, "-m", "essa_monai.ssa.benchmark", payload],
            capture_output=True, text=True, timeout=timeout_s,
        )
        if proc.returncode != 0:
            error = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"[benchmark] {label} failed: {error}", file=sys.stderr, flush=True)
            rows.append({"method": label, "error": error})
            continue
        row = {"method": label, **json.loads(proc.stdout.strip().splitlines()[-1])}
        print(f"[benchmark] {label}: {row['step_time_s']} s/step, peak {row['peak_memory_mib']} MiB", file=sys.stderr, flush=True)
        rows.append(row)
    reference = next((r for r in rows if r["method"] == "full" and "error" not in r), None)
    for row in rows:
        if reference is not None and "error" not in row:
            row["memory_ratio"] = round(row["peak_memory_mib"] / reference["peak_memory_mib"], 3)
            row["memory_above_baseline_ratio"] = round(
                row["peak_above_baseline_mib"] / reference["peak_above_baseline_mib"], 3
            )
            row["step_time_ratio"] = round(row["step_time_s"] / reference["step_time_s"], 3)
            row["throughput_ratio"] = round(row["images_per_s"] / reference["images_per_s"], 3)
    return rows


COLUMNS = [
    "method", "trainable_backbone_params", "peak_memory_mib", "memory_ratio", "peak_above_baseline_mib",
    "memory_above_baseline_ratio", "step_time_s", "step_time_ratio", "images_per_s", "throughput_ratio",
    "device", "peft", "loss", "error",
]


def format_results(rows: list[dict[str, Any]]) -> str:
    """A markdown table of the results (as committed in the README)."""
    shown = ["method", "trainable_backbone_params", "peak_memory_mib", "memory_ratio", "peak_above_baseline_mib",
             "memory_above_baseline_ratio", "step_time_s", "step_time_ratio", "images_per_s", "throughput_ratio"]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['method']} | failed: {row['error']} |")
        else:
            lines.append("| " + " | ".join(f"{row.get(c, '')}" if not isinstance(row.get(c), int) or c == "method"
                                           else f"{row[c]:,}" for c in shown) + " |")
    return "\n".join(lines)


def write_results(rows: list[dict[str, Any]], output_dir: str | Path, title: str = "SSA cost per PEFT method") -> dict[str, Path]:
    """Write ``ssa_benchmark.csv``, ``ssa_benchmark.md`` and the bar chart ``ssa_benchmark.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, png_path = (output_dir / f"ssa_benchmark.{ext}" for ext in ("csv", "md", "png"))
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    md_path.write_text(format_results(rows) + "\n")

    ok = [r for r in rows if "error" not in r and "memory_ratio" in r]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, key, label in zip(
        axes,
        ("memory_ratio", "step_time_ratio", "throughput_ratio"),
        ("peak memory / full", "step time / full", "throughput / full"),
    ):
        values = [r[key] for r in ok]
        ax.bar([r["method"] for r in ok], values, color=["#999999" if r["method"] == "full" else "#3a7dc9" for r in ok])
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_title(label)
        ax.tick_params(axis="x", rotation=30)
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return {"csv": csv_path, "markdown": md_path, "png": png_path}


def _worker(argv: list[str]) -> None:
    kwargs = json.loads(argv[0])
    print(json.dumps(measure_method(**kwargs)))


if __name__ == "__main__":
    _worker(sys.argv[1:])
