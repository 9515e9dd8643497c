"""Benchmark SSA cost (peak memory, step time, throughput) of every PEFT method side by side.

Same as ``essa-monai benchmark_ssa``; e.g. the README's CPU table::

    python scripts/benchmark_ssa.py --backbone vit_small_patch14_dinov2 --img_size 224 --batch_size 8
"""

import fire

from essa_monai.cli import command

if __name__ == "__main__":
    fire.Fire(command("benchmark_ssa"), name="benchmark_ssa.py")
