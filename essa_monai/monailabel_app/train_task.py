"""MONAI Label training task for a served essa-monai bundle (MONAI Label's ``BundleTrainTask``).

``POST /train/<name>`` runs the bundle's own supervised-adaptation workflow (same PEFT, losses, metrics,
checkpoints and merged-model export as ``monai.bundle run``) on the labels saved in the datastore:

- MONAI Label's nested overrides (``train#dataset#data``, ``train#trainer#max_epochs``, ...) become the
  bundle's top-level keys (``train_datalist``, ``val_datalist``, ``epochs``, ``device``), so the
  learning-rate schedule follows the requested number of epochs;
- ``pretrained`` (default on) continues from the served merged model (``init_model_file``) rather than
  MONAI Label's ``CheckpointLoader``, which would not fit the PEFT-wrapped network;
- labels that cannot be used are skipped with a warning (:mod:`.datastore_labels`); with too few labels
  for a validation split, the training images are also used for validation (the log says so).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.tasks.train.bundle import BundleTrainTask

from .datastore_labels import training_items
from .served_bundle import ServedBundle

__all__ = ["ESSATrainTask"]

logger = logging.getLogger(__name__)


class ESSATrainTask(BundleTrainTask):
    """Train ``bundle`` (a :class:`ServedBundle`) from the datastore's final labels.

    Args:
        bundle: the served bundle.
        conf: the app's ``--conf`` values.
    """

    def __init__(self, bundle: ServedBundle, conf: dict[str, str]) -> None:
        self.bundle = bundle
        self._init_model_file: str | None = None
        super().__init__(str(bundle.path), conf, load_strict=True)

    def config(self) -> dict[str, Any]:
        options = super().config()
        epochs = self.bundle_config.get("epochs")
        if isinstance(epochs, int):
            options["max_epochs"] = epochs  # the bundle's default, not MONAI Label's 50
        return options

    def _fetch_datalist(self, request: dict[str, Any], datastore: Datastore) -> list[dict[str, Any]]:
        records = super()._fetch_datalist(request, datastore)
        items, skipped = training_items(records, self.bundle.task, self.bundle.class_names)
        for reason in skipped:
            logger.info("%s: skipping a datastore label: %s", self.bundle.name, reason)
        if skipped:
            logger.warning("%s: %d of %d datastore labels skipped, e.g. %s", self.bundle.name, len(skipped),
                           len(records), "; ".join(skipped[:3]))
        if not items:
            raise MONAILabelException(
                MONAILabelError.APP_TRAIN_FAILED,
                f"{self.bundle.name}: no usable final labels in the datastore ({len(records)} found, "
                f"{len(skipped)} skipped)",
            )
        return items

    def _partition_datalist(self, datalist, request, shuffle=False):
        train, val = super()._partition_datalist(datalist, request, shuffle=shuffle)
        if not val:
            logger.warning("%s: no labels left for validation (%d labelled images, val_split=%s); "
                           "validating on the training images", self.bundle.name, len(datalist),
                           request.get("val_split", 0.2))
            val = list(train)
        return train, val

    def _load_checkpoint(self, model_pytorch: str, pretrained: bool, train_handlers: list) -> None:
        """Remember the served model to continue from (see the module docstring); ``train_handlers``
        stay as the bundle defines them."""
        self._init_model_file = model_pytorch if pretrained and os.path.isfile(model_pytorch) else None
        if self._init_model_file:
            logger.info("%s: continuing from %s", self.bundle.name, model_pytorch)

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        overrides.pop("train#handlers", None)
        overrides["train_datalist"] = overrides.pop("train#dataset#data")
        if "validate#dataset#data" in overrides:
            overrides["val_datalist"] = overrides.pop("validate#dataset#data")
        overrides["epochs"] = int(overrides.pop("train#trainer#max_epochs"))
        overrides["device"] = f"$torch.device('{overrides['device']}')"
        overrides["init_model_file"] = self._init_model_file
        return overrides
