"""The ``essa-monai`` command line: python-fire over the API functions themselves (:data:`COMMANDS`), so
each option has one signature and one description, in the function's docstring.

``essa-monai --help`` lists the commands without importing them (no torch, MONAI or timm: their summaries
are read from the source); ``essa-monai <command> --help`` imports that one command and shows all of its
options.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import fire

__all__ = ["COMMANDS", "command", "main", "params", "benchmark_ssa"]

#: command name -> ``"module:function"`` it runs
COMMANDS = {
    "run_essa": "essa_monai.pipeline.run:run_essa",
    "essa_grid": "essa_monai.pipeline.grid:essa_grid",
    "split": "essa_monai.data.split_file:dataset_split_file",
    "infer": "essa_monai.inference.api:infer",
    "params": "essa_monai.cli:params",
    "benchmark_ssa": "essa_monai.cli:benchmark_ssa",
}


def params(
    backbone: str = "vit_base_patch14_dinov2",
    apla_r: int = 128,
    lora_r: int = 4,
    vpt_tokens: int = 10,
    img_size: int = 224,
) -> None:
    """Print trainable vs total parameters of the backbone under each PEFT method.

    Args:
        backbone: timm DINOv2 name, e.g. vit_small_patch14_dinov2, vit_base_patch14_reg4_dinov2.
        apla_r: rows of W_O per block for the APLA subset row.
        lora_r: LoRA rank (on Q and V, MED-PEFT's setting).
        vpt_tokens: prompt tokens for the VPT rows.
        img_size: input size (multiple of 14); sets the positional-embedding grid, part of the total.
    """
    from .peft.summary import default_variants, format_table, parameter_table

    rows = parameter_table(backbone, default_variants(apla_r, lora_r, vpt_tokens), img_size=img_size)
    print(f"{backbone} at {img_size}x{img_size} (backbone parameters; heads not included)")
    print(format_table(rows))


def benchmark_ssa(
    backbone: str = "vit_small_patch14_dinov2",
    img_size: int = 224,
    batch_size: int = 8,
    n_local: int = 8,
    local_size: int = 98,
    steps: int = 5,
    warmup_steps: int = 2,
    methods: str | Sequence[str] = "full,apla,apla_r,lora,bitfit,vpt",
    apla_r: int = 128,
    lora_r: int = 4,
    vpt_tokens: int = 10,
    n_prototypes: int = 65536,
    precision: str = "fp32",
    device: str = "auto",
    output_dir: str = "runs/benchmark_ssa",
) -> None:
    """Measure SSA peak memory, step time and throughput of each PEFT method side by side.

    Each method runs in its own process, one after the other, on the same synthetic multi-crop batch
    (2 global crops of img_size, n_local local crops of local_size, per image). Writes
    ssa_benchmark.csv, .md and .png to output_dir and prints the table (ratios are to full SSA).

    Args:
        backbone: timm DINOv2 name.
        img_size: global crop size in pixels (a multiple of 14).
        batch_size: images per step.
        n_local: local crops per image.
        local_size: local crop size in pixels (a multiple of 14).
        steps: timed steps per method.
        warmup_steps: untimed steps first.
        methods: comma-separated subset of full, apla, apla_r, lora, bitfit, vpt (deep VPT).
        apla_r: rows of W_O per block for apla_r.
        lora_r: LoRA rank (on Q and V).
        vpt_tokens: prompt tokens per block for vpt.
        n_prototypes: prototypes of the DINO and iBOT heads.
        precision: fp32, bf16 or fp16 (fp16 on CUDA only).
        device: auto (CUDA if available), cpu or cuda.
        output_dir: folder for ssa_benchmark.csv, .md and .png.
    """
    from .ssa.benchmark import format_results, run_benchmark, write_results

    names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods)
    rows = run_benchmark(
        names, apla_r=apla_r, lora_r=lora_r, vpt_tokens=vpt_tokens, backbone=backbone, img_size=img_size,
        local_size=local_size, n_local=n_local, batch_size=batch_size, steps=steps, warmup_steps=warmup_steps,
        n_prototypes=n_prototypes, precision=precision, device=device,
    )
    paths = write_results(rows, output_dir, title=f"SSA cost per PEFT method: {backbone}, {img_size} px, batch {batch_size}")
    print(format_results(rows))
    print(f"written: {', '.join(str(p) for p in paths.values())}")


# ---- what a command prints once its function returns --------------------------------------------------


def _print_run(result: dict[str, Any]) -> None:
    times = result.get("times_s", {})
    state = "finished before (not run again)" if result.get("skipped") else "done"
    print(f"{result['dataset']} {result['label_fraction'] * 100:g}% {result['row']}: {state}")
    for split, metrics in result["metrics"].items():
        # per-class values (e.g. mean_auroc_Atelectasis next to mean_auroc) stay in result.json
        main = {k: v for k, v in metrics.items() if not any(k.startswith(o + "_") for o in metrics if o != k)}
        extra = f" (+{len(metrics) - len(main)} per-class values in result.json)" if len(main) < len(metrics) else ""
        print(f"  {split}: " + ", ".join(f"{k} {v:.4f}" for k, v in main.items() if isinstance(v, float)) + extra)
    p = result["params"]
    ssa = "-" if p["ssa_trainable_backbone"] is None else f"{p['ssa_trainable_backbone']:,}"
    print(f"  trainable backbone params: SSA {ssa}, SA {p['sa_trainable_backbone']:,} of {p['backbone_total']:,}")
    print(f"  wall time: SSA {times.get('ssa', 0):.1f} s, SA {times.get('sa', 0):.1f} s, eval {times.get('eval', 0):.1f} s")
    print(f"  result: {result['run_dir']}/result.json")


def _print_split(path: str) -> None:
    import json

    counts = json.loads(Path(path).read_text())["meta"]["counts"]
    print(f"{path}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def _exit_code(code: int) -> None:
    if code:
        raise SystemExit(code)


_REPORTS: dict[str, Callable[[Any], None]] = {"run_essa": _print_run, "split": _print_split, "infer": _exit_code}


# ---- commands for python-fire ----------------------------------------------------------------------------


def _one_line_options(doc: str | None) -> str:
    """``doc`` with each ``Args`` entry on one line: python-fire keeps only the first line of a description
    when a later line holds a colon, so ``--help`` would cut it."""
    lines, out, indent = inspect.cleandoc(doc or "").splitlines(), [], None
    for line in lines:
        if re.fullmatch(r"(Args|Arguments):", line.strip()):
            indent = len(line) - len(line.lstrip()) + 4
        elif indent is not None:
            depth = len(line) - len(line.lstrip())
            if not line.strip() or depth < indent:
                indent = None
            elif depth > indent:
                out[-1] += " " + line.strip()
                continue
        out.append(line)
    return "\n".join(out)


def command(name: str) -> Callable:
    """The function ``essa-monai <name>`` runs: the API function of :data:`COMMANDS` (its signature, its
    docstring with one line per option), whose result is printed, or becomes the exit code for ``infer``.
    A data error (:class:`essa_monai.data.DataError`: a file and its problem) prints ``error: ...`` and exits 2."""
    module, attr = COMMANDS[name].split(":")
    fn = getattr(importlib.import_module(module), attr)
    report = _REPORTS.get(name)

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        from .data.errors import DataError

        try:
            result = fn(*args, **kwargs)
        except DataError as err:  # bad input: the file and the problem, without a traceback
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from err
        if report is not None:
            report(result)

    run.__signature__ = inspect.signature(fn)
    run.__doc__ = _one_line_options(fn.__doc__)
    return run


def _summary(name: str) -> Callable:
    """A stand-in for the listing: the command's summary, read from its module's source (nothing imported)."""
    module, attr = COMMANDS[name].split(":")
    source = Path(__file__).resolve().parent.joinpath(*module.split(".")[1:]).with_suffix(".py")
    tree = ast.parse(source.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == attr)

    def listed() -> None:
        pass

    listed.__doc__ = re.split(r"(?<=\.)\s", (ast.get_docstring(node) or "").split("\n\n")[0], maxsplit=1)[0]
    return listed


def main(argv: Sequence[str] | None = None) -> None:
    """``essa-monai [command] [options]``: one command imported and run, or the list of commands."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        fire.Fire({argv[0]: command(argv[0])}, command=argv, name="essa-monai")
    else:
        fire.Fire({name: _summary(name) for name in COMMANDS}, command=argv, name="essa-monai")


if __name__ == "__main__":
    main()
