"""The essa-monai MONAI Label app: serves the repository's bundles (2D segmentation and classification).

Start it from the project root (needs the ``monailabel`` extra, see the README)::

    monailabel start_server --app essa_monai/monailabel_app \\
        --studies demo_data/isic2018/ISIC2018_Task1-2_Training_Input \\
        --conf models isic_apla,isic_cls_apla --conf sam2 false

``--conf`` options:

- ``models``: comma-separated bundle names under ``bundles/`` (default ``all``: every bundle with a
  ``configs/train.json``);
- ``bundles``: the folder holding the bundles (default: ``bundles/`` of the project);
- ``workspace``: where the served copies and their models live (default ``<studies>/.essa_monai/bundles``);
- ``bundle_overrides``: a JSON object of top-level keys set in every served bundle, e.g.
  ``'{"img_size": 224, "num_workers": 2}'``;
- ``preload``: load the models at start (MONAI Label's option).

Every model is served on CPU or GPU (request ``device``) and nothing is downloaded: the app has no SAM2
or other hub models, so ``--conf sam2 false`` changes nothing here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

import essa_monai
from essa_monai.bundle_paths import project_root
from essa_monai.monailabel_app.infer_task import ESSAInferTask
from essa_monai.monailabel_app.served_bundle import ServedBundle, prepare_served_bundle
from essa_monai.monailabel_app.train_task import ESSATrainTask

__all__ = ["ESSAApp"]

logger = logging.getLogger(__name__)


def _bundle_names(requested: str, bundles_dir: Path) -> list[str]:
    available = sorted(p.parent.parent.name for p in bundles_dir.glob("*/configs/train.json"))
    if requested.strip().lower() in ("", "all"):
        return available
    names = [n.strip() for n in requested.split(",") if n.strip()]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"--conf models: unknown bundle(s) {unknown} in {bundles_dir}; available: {available}")
    return names


class ESSAApp(MONAILabelApp):
    """MONAI Label app over essa-monai bundles (see the module docstring for ``--conf``)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        bundles_dir = Path(conf.get("bundles") or project_root() / "bundles").resolve()
        workspace = Path(conf.get("workspace") or Path(studies) / ".essa_monai" / "bundles").resolve()
        try:
            overrides: dict[str, Any] = json.loads(conf.get("bundle_overrides") or "{}")
        except json.JSONDecodeError as err:
            raise ValueError(f"--conf bundle_overrides is not a JSON object: {err}") from err
        if not isinstance(overrides, dict):
            raise ValueError(f"--conf bundle_overrides must be a JSON object, got {overrides!r}")
        self.served: dict[str, ServedBundle] = {
            name: prepare_served_bundle(bundles_dir / name, workspace, studies, overrides)
            for name in _bundle_names(conf.get("models", "all"), bundles_dir)
        }
        logger.info("essa-monai: serving %s from %s (workspace %s)", list(self.served), bundles_dir, workspace)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="essa-monai",
            description="DINOv2 ViTs adapted with PEFT (ESSA): 2D segmentation and classification",
            version=essa_monai.__version__,
        )

    def _infer_task(self, bundle: ServedBundle) -> InferTask | None:
        if not bundle.model_file.is_file():
            return None
        task = ESSAInferTask(bundle, self.conf)
        return task if task.is_valid() else None

    def init_infers(self) -> dict[str, InferTask]:
        infers = {}
        for name, bundle in self.served.items():
            task = self._infer_task(bundle)
            if task is None:
                logger.warning("%s: no trained model at %s yet; /infer/%s appears once /train/%s has written one",
                               name, bundle.model_file, name, name)
            else:
                infers[name] = task
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        return {name: ESSATrainTask(bundle, self.conf) for name, bundle in self.served.items()}

    def _add_trained_models(self) -> None:
        """Serve bundles whose first model was written after the server started (training runs in
        another process)."""
        for name, bundle in self.served.items():
            if name not in self._infers:
                task = self._infer_task(bundle)
                if task is not None:
                    logger.info("%s: trained model found, now serving /infer/%s", name, name)
                    self._infers[name] = task

    def info(self) -> dict[str, Any]:
        self._add_trained_models()
        return super().info()

    def infer(self, request: dict[str, Any], datastore=None) -> dict[str, Any]:
        self._add_trained_models()
        return super().infer(request, datastore)


