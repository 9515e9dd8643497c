"""Where the bundles and the demo data are, so bundle configs work from a fresh checkout.

Bundle configs set ``"bundle_root": "$essa_monai.bundle_paths.bundle_root('isic_apla')"`` instead of a
path the user must pass. The project root is found, in order, from ``$ESSA_MONAI_ROOT``, the current
directory (when it has ``bundles/``) or the folder above the installed ``essa_monai`` package (an
editable install from a checkout).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

__all__ = ["project_root", "project_root_of", "working_directory", "bundle_root", "demo_data_dir",
           "ensure_demo_data", "prepare_data_dir"]


def project_root() -> Path:
    """The folder holding ``bundles/`` (raises ``FileNotFoundError`` naming where it looked)."""
    candidates = [os.environ.get("ESSA_MONAI_ROOT"), os.getcwd(), str(Path(__file__).resolve().parents[1])]
    for candidate in filter(None, candidates):
        if (Path(candidate) / "bundles").is_dir():
            return Path(candidate).resolve()
    raise FileNotFoundError(
        f"no 'bundles/' folder in any of {[c for c in candidates if c]}; run from the essa-monai checkout "
        "or set ESSA_MONAI_ROOT"
    )


def project_root_of(bundle_dir: str | os.PathLike[str]) -> Path:
    """The folder whose ``bundles/common`` the ``%bundles/common/...`` macros of ``bundle_dir``'s configs
    name: the nearest parent holding ``bundles/common``, else :func:`project_root`."""
    bundle_dir = Path(bundle_dir).resolve()
    for candidate in bundle_dir.parents:
        if (candidate / "bundles" / "common").is_dir():
            return candidate
    return project_root()


@contextlib.contextmanager
def working_directory(path: str | os.PathLike[str]) -> Iterator[None]:
    """Run the ``with`` block in ``path`` (bundle macros name files relative to the working directory)."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def bundle_root(name: str) -> str:
    """Absolute path of ``bundles/<name>``."""
    path = project_root() / "bundles" / name
    if not (path / "configs").is_dir():
        raise FileNotFoundError(f"bundle {name!r} not found: {path}/configs does not exist")
    return str(path)


def demo_data_dir() -> str:
    """``<project root>/demo_data`` (written by ``scripts/make_demo_data.py``)."""
    return str(project_root() / "demo_data")


def ensure_demo_data(out_dir: str | os.PathLike[str] | None = None, seed: int = 0) -> str:
    """Write the synthetic demo data to ``out_dir`` (default :func:`demo_data_dir`) unless it is there
    already; return the folder. Lets every bundle run out of the box."""
    from .data.demo import make_demo_data

    out = Path(out_dir) if out_dir is not None else Path(demo_data_dir())
    parts = ("isic2018", "chestxray14", "dicom", "nifti")
    missing = tuple(p for p in parts if not (out / p).is_dir())
    if missing:
        make_demo_data(out, seed, parts=missing)
    return str(out)


def prepare_data_dir(data_dir: str | os.PathLike[str]) -> str:
    """Check a bundle's ``data_dir`` before a run: inside the demo-data folder, write the demo data if
    it is missing; elsewhere, raise ``FileNotFoundError`` naming the folder. Returns ``data_dir``."""
    path = Path(data_dir).resolve()
    demo = Path(demo_data_dir()).resolve()
    if path == demo or demo in path.parents:
        ensure_demo_data(demo)
    if not path.is_dir():
        raise FileNotFoundError(f"data_dir does not exist: {path} (point --data_dir at your dataset)")
    return str(path)
