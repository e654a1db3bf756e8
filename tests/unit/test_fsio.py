"""imgcls.fsio: the one atomic write. A failure leaves the destination as it was and no temporary file behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imgcls.fsio import atomic_file, atomic_write_bytes, link_new, staging_dir, swap_dirs, umask


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


_HOLD_STAGING = """
import sys, time
from pathlib import Path
from imgcls.fsio import staging_dir
with staging_dir(Path(sys.argv[1]), sys.argv[2]) as stage:
    (stage / "weights.bin").write_bytes(b"x" * 1000)
    print(stage, flush=True)
    time.sleep(120)
"""


def _hold_staging(dest: Path, kind: str = "staging") -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_STAGING, str(dest), kind], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.mark.parametrize("kind", ["staging", "pull"])
def test_a_staging_folder_of_a_killed_process_is_removed_by_the_next_one(tmp_path: Path, kind: str) -> None:
    """`imgcls export` or `imgcls pull` killed with SIGKILL (or by the OOM killer) left its hidden staging folder,
    a whole bundle's worth of disk, beside the bundle for ever."""
    dest = tmp_path / "bundle"
    proc, dead = _hold_staging(dest, kind)
    proc.kill()
    proc.wait()
    assert (dead / "weights.bin").is_file()  # what a killed process leaves
    with staging_dir(dest, kind) as fresh:
        assert dead.exists()  # under a minute old: it could be another process's, between its mkdtemp and lock
    _age(dead, 120)
    with staging_dir(dest, kind) as fresh:
        assert not dead.exists() and fresh.is_dir()
        assert fresh.name.startswith(f".bundle.{kind}-")


def test_a_staging_folder_another_process_is_filling_is_left_alone(tmp_path: Path) -> None:
    dest = tmp_path / "bundle"
    proc, live = _hold_staging(dest)
    try:
        _age(live, 3600)  # an export that has been running for an hour
        with staging_dir(dest) as mine:
            assert (live / "weights.bin").is_file() and mine != live
    finally:
        proc.kill()
        proc.wait()


def test_a_staging_folder_is_removed_when_the_block_fails_and_other_folders_are_never_touched(tmp_path: Path) -> None:
    dest = tmp_path / "bundle"
    keep = [tmp_path / ".bundle.staging", tmp_path / ".bundle2.staging-x", tmp_path / "bundle.staging-x"]
    for folder in keep:
        folder.mkdir()
        _age(folder, 3600)
    (tmp_path / ".bundle.staging-link").symlink_to(tmp_path / "bundle.staging-x")
    with pytest.raises(RuntimeError), staging_dir(dest) as stage:
        (stage / "f").write_text("x")
        raise RuntimeError
    assert not stage.exists()
    assert all(folder.is_dir() for folder in keep) and (tmp_path / ".bundle.staging-link").is_symlink()


_HOLD_TEMP = """
import sys, time
from pathlib import Path
from imgcls.fsio import atomic_file
with atomic_file(Path(sys.argv[1])) as tmp:
    tmp.write_bytes(b"x" * 1000)
    print(tmp, flush=True)
    time.sleep(120)
"""


def test_a_temporary_file_of_a_killed_writer_is_removed_by_the_next_write_of_that_file(tmp_path: Path) -> None:
    """A training SIGKILLed (the OOM killer, a preempted machine) while it saved a checkpoint left the
    half-written `.last.safetensors.XXXXXXXX.tmp`, as big as the model and its optimiser state, for ever."""
    dest = tmp_path / "last.safetensors"
    writer = subprocess.Popen([sys.executable, "-c", _HOLD_TEMP, str(dest)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    dead = Path(writer.stdout.readline().strip())
    writer.kill()
    writer.wait()
    assert dead.is_file() and dead.name.startswith(".last.safetensors.")
    other = tmp_path / ".last.safetensors.sha.abcdefgh.tmp"  # another destination's temporary file
    other.write_text("x")
    for path in (dead, other):
        _age(path, 600)
    atomic_write_bytes(dest, b"checkpoint")
    assert not dead.exists() and other.exists() and dest.read_bytes() == b"checkpoint"


def test_a_temporary_file_being_written_is_left_alone_however_old(tmp_path: Path) -> None:
    dest = tmp_path / "model.onnx"
    writer = subprocess.Popen([sys.executable, "-c", _HOLD_TEMP, str(dest)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None
        live = Path(writer.stdout.readline().strip())
        _age(live, 3600)  # a slow export, or one writing to a slow disk
        young = tmp_path / ".model.onnx.k1ll3d00.tmp"  # unlocked but new: maybe between mkstemp and its lock
        young.write_text("x")
        atomic_write_bytes(dest, b"onnx")
        assert live.read_bytes() == b"x" * 1000 and young.exists()
    finally:
        writer.kill()
        writer.wait()
