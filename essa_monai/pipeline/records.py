"""The files a pipeline run leaves behind: JSON records written atomically, settings fingerprints, error
summaries, and moving an outdated run folder aside."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..atomic import atomic_write

__all__ = ["now", "say", "write_json", "read_json", "normalise", "short_hash", "describe_error", "archive", "link"]


def now() -> str:
    """The local time, ISO 8601 with the UTC offset, to the second."""
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def say(message: str) -> None:
    print(f"[essa] {message}", flush=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: Path, content: Any) -> None:
    """Write ``content`` as indented JSON, atomically (a half-written record must never look finished)."""
    text = json.dumps(content, indent=2, default=_json_default, allow_nan=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def read_json(path: Path) -> Any:
    """The JSON content of ``path``, or ``None`` when there is no such file."""
    return json.loads(path.read_text()) if path.is_file() else None


def normalise(value: Any) -> Any:
    """JSON round trip, so settings compare equal to what was read back from a file."""
    return json.loads(json.dumps(value, default=_json_default, sort_keys=True))


def short_hash(content: Any, length: int = 8) -> str:
    """The first ``length`` hex digits of the SHA-1 of ``content``'s sorted JSON."""
    return hashlib.sha1(json.dumps(content, sort_keys=True, default=_json_default).encode()).hexdigest()[:length]


def describe_error(err: BaseException) -> str:
    """``"Type: message"`` of the root cause first (MONAI wraps errors inside config expressions in a
    ``RuntimeError: Failed to evaluate ...``), then the first line of the wrapper it was raised through."""
    root, seen = err, {id(err)}
    while root.__cause__ is not None and id(root.__cause__) not in seen:
        root = root.__cause__
        seen.add(id(root))
    text = f"{type(root).__name__}: {root}"
    if root is not err:
        text += f" [raised through {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}]"
    return text


def archive(folder: Path, why: str) -> None:
    """Move ``folder`` aside to ``<folder>.prev-<time>`` (nothing is deleted)."""
    target = folder.with_name(f"{folder.name}.prev-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
    say(f"{why}: moving the old run folder aside to {target}")
    shutil.move(str(folder), str(target))


def link(link_path: Path, target: str) -> None:
    """A relative symlink ``link_path -> target``; skipped where symlinks are not allowed (the result
    records the target anyway)."""
    try:
        if link_path.is_symlink() or link_path.exists():
            link_path.unlink()
        link_path.symlink_to(os.path.relpath(target, link_path.parent), target_is_directory=True)
    except OSError:
        pass
