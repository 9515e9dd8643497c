"""Shared fixtures: tiny random-init DINOv2-architecture ViTs (embed dim 32, depth 3, 28 px)."""

from __future__ import annotations

import warnings

import pytest
import torch

from essa_monai.backbone import create_backbone

TINY = dict(embed_dim=32, depth=3, num_heads=2)


def make_tiny_backbone(name: str = "vit_small_patch14_dinov2", seed: int = 0, img_size: int = 28, **kwargs):
    """A random-init timm DINOv2 ViT with embed dim 32, depth 3 (or as overridden), seeded."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return create_backbone(name, img_size=img_size, **{**TINY, **kwargs})


@pytest.fixture
def tiny_backbone():
    return make_tiny_backbone


#: top-level overrides that make the bundles' networks tiny (the served and trained copies must agree)
TINY_BUNDLE = {"backbone_kwargs": {"embed_dim": 32, "depth": 2, "num_heads": 2}, "img_size": 28, "decoder_channels": 16}


@pytest.fixture(scope="session")
def tiny_bundle_project(tmp_path_factory):
    """A project folder with copies of the bundle configs (``bundles/common``, ``isic_apla``,
    ``isic_cls_apla``) and the ISIC demo data; ``isic_apla`` is trained for one epoch with
    :data:`TINY_BUNDLE` (its model in ``bundles/isic_apla/models``), ``isic_cls_apla`` is not trained.
    Returns ``(project_root, demo_root)``."""
    import shutil
    from pathlib import Path

    from monai.bundle import ConfigWorkflow

    from essa_monai.bundle_paths import working_directory
    from essa_monai.data.demo import make_demo_data

    repo = Path(__file__).resolve().parents[1]
    root = tmp_path_factory.mktemp("project")
    for name in ("common", "isic_apla", "isic_cls_apla"):
        src = repo / "bundles" / name
        shutil.copytree(src, root / "bundles" / name, ignore=shutil.ignore_patterns("models", "runs"))
    demo_root = root / "demo"
    make_demo_data(demo_root, parts=("isic2018",))
    bundle = root / "bundles" / "isic_apla"
    args = {**TINY_BUNDLE, "random_init_warning": False, "batch_size": 4, "epochs": 1, "cache_rate": 0.0,
            "data_dir": str(demo_root / "isic2018"), "bundle_root": str(bundle)}
    with working_directory(root):
        workflow = ConfigWorkflow(config_file="bundles/isic_apla/configs/train.json", workflow_type=None,
                                  logging_file=False, **args)
        workflow.initialize()
        workflow.run()
        workflow.finalize()
    assert (bundle / "models" / "model.pt").is_file()
    return root, demo_root
