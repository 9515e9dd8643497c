"""Atomic file writes: a half-written file must never look finished (an interrupted run, a crash, a
reader polling the folder)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> str:
    """Call ``write(tmp_path)`` for a temporary file next to ``path`` (same folder, same suffix, so
    writers that pick the format from the name work), then move it onto ``path`` with ``os.replace``.
    ``write`` creates the temporary file itself, so it gets the usual permissions (umask). Creates the
    folder; removes the temporary file if ``write`` fails. Returns ``str(path)``.

    Example: ``atomic_write(file, lambda tmp: torch.save(state, tmp))``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    tmp = str(path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{suffix}"))
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return str(path)
