"""imgcls.fsio: the one atomic write. A failure leaves the destination as it was and no temporary file behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imgcls.fsio import atomic_file, atomic_write_bytes, link_new, swap_dirs, umask


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    dest = tmp_path / "weights.bin"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(dest) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert dest.read_bytes() == b"old" and _leftovers(tmp_path) == []
    atomic_write_bytes(dest, b"new")
    assert dest.read_bytes() == b"new" and _leftovers(tmp_path) == []


def test_the_file_gets_the_umask_mode_even_when_the_writer_replaces_it(tmp_path: Path) -> None:
    dest = tmp_path / "model.safetensors"
    with atomic_file(dest) as tmp:  # like safetensors.save_file: unlink, then create with 0600
        tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"x")
        os.close(fd)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~umask()


def test_create_only_commit_never_overwrites(tmp_path: Path) -> None:
    dest = tmp_path / "object"
    with atomic_file(dest, commit=link_new) as tmp:
        tmp.write_bytes(b"first")
    with pytest.raises(FileExistsError), atomic_file(dest, commit=link_new) as tmp:
        tmp.write_bytes(b"second")
    assert dest.read_bytes() == b"first" and _leftovers(tmp_path) == []


def test_swap_dirs_replaces_a_live_directory_whole(tmp_path: Path) -> None:
    live, stage = tmp_path / "bundle", tmp_path / ".bundle.stage"
    live.mkdir()
    (live / "a").write_text("old")
    stage.mkdir()
    (stage / "a").write_text("new")
    (stage / "b").write_text("added")
    swap_dirs(stage, live)
    assert {p.name: p.read_text() for p in live.iterdir()} == {"a": "new", "b": "added"}
    assert not stage.exists() and _leftovers(tmp_path) == []


def test_check_output_refuses_before_the_work_a_destination_that_could_not_be_written(tmp_path):
    from imgcls.errors import UsageError
    from imgcls.fsio import check_output

    (tmp_path / "notes").write_text("a file")
    for path, folder in [
        (tmp_path / "new" / "deeper", True),
        (tmp_path / "report.json", False),
        (tmp_path / "notes", False),
        (tmp_path, True),
        (Path("relative.json"), False),
    ]:
        check_output(path, "--out", folder=folder)  # fine: nothing is made or written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]
    with pytest.raises(UsageError, match=r"--out .*/notes is a file, not a folder"):
        check_output(tmp_path / "notes", "--out", folder=True)
    with pytest.raises(UsageError, match=r"--json .*/notes/r\.json: .*/notes is a file, not a folder"):
        check_output(tmp_path / "notes" / "r.json", "--json", folder=False)
    with pytest.raises(UsageError, match=r"--json .* is a folder"):
        check_output(tmp_path, "--json", folder=False)
    for url in ("gs://bucket/runs/x", "s3://b/r.json", "https://host/x"):  # Path() keeps one slash: gs:/bucket/...
        with pytest.raises(UsageError, match=f"--out {url} is a URL, and --out is a folder or file on this machine"):
            check_output(Path(url), "--out", folder=True)
    assert not Path("gs:").exists()
    # a file:// URL names a path here: it is shown whole (was 'file://srv/run') with the path to give instead
    with pytest.raises(UsageError, match="--out file:///srv/run is a URL") as info:
        check_output(Path("file:///srv/run"), "--out", folder=True)
    assert info.value.hint == "give the path itself: --out /srv/run"
