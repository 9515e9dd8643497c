"""The whole ESSA pipeline (SSA -> SA -> evaluation) for one dataset, or a grid of them with a results table.

Same as ``essa-monai run_essa`` / ``essa-monai essa_grid``; e.g.::

    python scripts/run_essa.py run --dataset isic_cls --ssa_method apla --backbone_weights /models/dinov2_vits14_pretrain.pth
    python scripts/run_essa.py grid --methods full,apla,lora,bitfit --datasets isic_cls,cxr14 --fractions 0.01,0.1,1.0
"""

import fire

from essa_monai.cli import command

if __name__ == "__main__":
    fire.Fire({"run": command("run_essa"), "grid": command("essa_grid")}, name="run_essa.py")
