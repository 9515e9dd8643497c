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


def main() -> None:
    fire.Fire(CLI, name="essa-monai")


if __name__ == "__main__":
    main()
