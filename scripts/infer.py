"""Run a bundle's trained model on images (same as ``essa-monai infer``); e.g.::

    python scripts/infer.py --bundle bundles/isic_apla --input /data/images --output_dir runs/infer --tta

Exit code 0: all inputs ok; 3: some were skipped (see report.csv); 2: usage error.
"""

import fire

from essa_monai.cli import command

if __name__ == "__main__":
    fire.Fire(command("infer"), name="infer.py")
