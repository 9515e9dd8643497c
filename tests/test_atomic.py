"""The one atomic-write helper: a finished file appears whole or not at all."""

from __future__ import annotations

import pytest

from essa_monai.atomic import atomic_write


def test_atomic_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "sub" / "mask.nii.gz"
    seen = []

    def write(tmp: str) -> None:
        seen.append(tmp)
        with open(tmp, "wb") as f:
            f.write(b"new")

    assert atomic_write(target, write) == str(target)
    assert target.read_bytes() == b"new"
    assert seen[0].endswith(".tmp.nii.gz") and seen[0].startswith(str(target.parent / ".mask.nii.gz."))
    assert sorted(p.name for p in target.parent.iterdir()) == ["mask.nii.gz"]


def test_a_failing_write_keeps_the_old_file_and_removes_its_temporary_file(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old")

    def crash(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, crash)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
