#!/usr/bin/env python
"""Write the small synthetic demo data set (ISIC 2018 and ChestX-ray14 layouts, DICOM, NIfTI).

Usage::

    python scripts/make_demo_data.py                       # -> demo_data/ at the repository root
    python scripts/make_demo_data.py --out_dir /tmp/demo --seed 1 --overwrite

The same code is importable as :func:`essa_monai.data.demo.make_demo_data`.
"""

from __future__ import annotations

import os
import time

import fire

from essa_monai.data.demo import make_demo_data

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(out_dir: str = os.path.join(REPO_ROOT, "demo_data"), seed: int = 0, overwrite: bool = False) -> None:
    """Write the demo data to ``out_dir`` (default ``<repo>/demo_data``) and print what was written."""
    start = time.perf_counter()
    summary = make_demo_data(out_dir, seed, overwrite=overwrite)
    print(f"wrote synthetic demo data to {summary['out_dir']} (seed={seed}) in {time.perf_counter() - start:.1f} s")
    for part, content in summary.items():
        if part in ("out_dir", "seed"):
            continue
        if isinstance(content, dict):
            print(f"  {part}: " + ", ".join(f"{k}={v}" for k, v in content.items()))
        else:
            print(f"  {part}: {len(content)} files: " + ", ".join(content))


if __name__ == "__main__":
    fire.Fire(main)
