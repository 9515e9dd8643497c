"""The ``essa-monai`` command line (python-fire): ``essa-monai <command> --help`` shows each command."""

from __future__ import annotations

import fire

from .peft.summary import default_variants, format_table, parameter_table


class CLI:
    """essa-monai: efficient self-supervised adaptation of DINOv2 to medical images."""

    def params(
        self,
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
        rows = parameter_table(backbone, default_variants(apla_r, lora_r, vpt_tokens), img_size=img_size)
        print(f"{backbone} at {img_size}x{img_size} (backbone parameters; heads not included)")
        print(format_table(rows))

    def benchmark_ssa(
        self,
        backbone: str = "vit_small_patch14_dinov2",
        img_size: int = 224,
        batch_size: int = 8,
        n_local: int = 8,
        local_size: int = 98,
        steps: int = 5,
        warmup_steps: int = 2,
        methods: str | list[str] = "full,apla,apla_r,lora,bitfit,vpt",
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
            methods: comma-separated subset of full, apla, apla_r, lora, bitfit, vpt.
            precision: fp32, bf16 or fp16 (fp16 on CUDA only).
            device: auto (CUDA if available), cpu or cuda.
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


def main() -> None:
    fire.Fire(CLI, name="essa-monai")


if __name__ == "__main__":
    main()
