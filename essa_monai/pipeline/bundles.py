"""Run and read the MONAI bundle configs in-process, from the project root (their ``%`` macros name
``bundles/common/...`` relative to it)."""

from __future__ import annotations

import contextlib
import gc
from typing import Any, Iterator, Sequence

from ..bundle_paths import project_root, working_directory

__all__ = ["in_project_root", "parse_config", "run_workflow", "key_metric_name"]


@contextlib.contextmanager
def in_project_root() -> Iterator[str]:
    """Change into the project root (the folder with ``bundles/``) for the block; restore the old one."""
    root = str(project_root())
    with working_directory(root):
        yield root


def _config_files(config: str | Sequence[str]) -> str | list[str]:
    return config if isinstance(config, str) else list(config)


def parse_config(config: str | Sequence[str], overrides: dict[str, Any], *ids: str, default: Any = KeyError) -> list[Any]:
    """Parse only the given ids of a bundle config (after top-level ``overrides``), without running it.
    E.g. ``parse_config(train_json, {"data_dir": d}, "train_datalist")``. An id the config lacks gives
    ``default``, or raises ``KeyError`` when no default is given."""
    from monai.bundle import ConfigParser

    with in_project_root():
        parser = ConfigParser()
        parser.read_config(_config_files(config))
        parser.update(overrides)
        if default is KeyError:
            return [parser.get_parsed_content(i) for i in ids]
        return [parser.get_parsed_content(i) if i in parser else default for i in ids]


def key_metric_name(config: str | Sequence[str]) -> str:
    """The bundle's key metric name (the single key of its top-level ``key_metric``), e.g.
    ``val_balanced_accuracy``; read without instantiating anything."""
    from monai.bundle import ConfigParser

    with in_project_root():
        parser = ConfigParser()
        parser.read_config(_config_files(config))
        return next(iter(parser["key_metric"]))


def run_workflow(
    config: str | Sequence[str],
    overrides: dict[str, Any],
    fetch: Sequence[str] = (),
    before_run=None,
) -> dict[str, Any]:
    """``ConfigWorkflow`` initialize/run/finalize of a bundle config with top-level ``overrides``.

    Args:
        fetch: config ids whose parsed objects are returned after the run (e.g. ``"train#network"``,
            ``"validate#evaluator"``), parsed before ``finalize``.
        before_run: optional ``callback(parser)`` called between ``initialize`` and ``run``.

    Returns:
        ``{id: parsed object}`` for ``fetch``.
    """
    from monai.bundle import ConfigWorkflow

    with in_project_root():
        workflow = ConfigWorkflow(
            config_file=_config_files(config), workflow_type=None, logging_file=False, **overrides
        )
        workflow.initialize()
        try:
            if before_run is not None:
                before_run(workflow.parser)
            workflow.run()
            fetched = {i: workflow.parser.get_parsed_content(i) for i in fetch}
        finally:
            workflow.finalize()
    del workflow
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return fetched
