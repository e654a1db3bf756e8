"""The bundle contract: verification refuses tampered, partial and unknown bundles; edits are atomic."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from imgcls.bundle import FORMAT, MANIFEST, WEIGHTS, edit_bundle, load_bundle
from imgcls.errors import BundleError


@pytest.fixture()
def bundle_copy(random_bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(random_bundle, dst)
    return dst


def test_a_fresh_bundle_loads_and_lists_every_file_with_its_sha256(bundle_copy: Path) -> None:
    b = load_bundle(bundle_copy)
    assert b.meta.format == FORMAT
    assert WEIGHTS in b.files and len(b.files[WEIGHTS]) == 64
    assert b.classes == [f"digit_{i}" for i in range(10)]
    assert b.input.size == (16, 16) and b.input.channels == 1


def test_one_flipped_byte_in_the_weights_is_refused(bundle_copy: Path) -> None:
    w = bundle_copy / WEIGHTS
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0x01
    w.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"failed verification: weights\.safetensors"):
        load_bundle(bundle_copy)


def test_a_missing_file_is_refused_as_partial(bundle_copy: Path) -> None:
    (bundle_copy / WEIGHTS).unlink()
    with pytest.raises(BundleError, match=r"incomplete: weights\.safetensors is missing"):
        load_bundle(bundle_copy)


def test_unknown_format_and_missing_manifest_are_refused(bundle_copy: Path, tmp_path: Path) -> None:
    meta = json.loads((bundle_copy / MANIFEST).read_text())
    meta["format"] = "imgcls.bundle/99"
    (bundle_copy / MANIFEST).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"unknown bundle format 'imgcls\.bundle/99'"):
        load_bundle(bundle_copy)
    with pytest.raises(BundleError, match=r"bundle\.json is missing"):
        load_bundle(tmp_path)


@pytest.mark.parametrize("evil", ["../outside", "/etc/passwd", "a/../../b", "a\\b", "x\x00y"])
def test_a_manifest_naming_a_path_outside_the_bundle_is_refused(bundle_copy: Path, evil: str) -> None:
    meta = json.loads((bundle_copy / MANIFEST).read_text())
    meta["files"][evil] = "0" * 64
    (bundle_copy / MANIFEST).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="unsafe file path"):
        load_bundle(bundle_copy)


def test_edit_bundle_swaps_in_a_new_file_and_keeps_the_old_on_error(bundle_copy: Path) -> None:
    with edit_bundle(bundle_copy) as edit:
        edit.write("extra.txt", b"hello")
        edit.meta.name = "edited"
    b = load_bundle(bundle_copy)
    assert b.has("extra.txt") and (bundle_copy / "extra.txt").read_text() == "hello" and b.name == "edited"
    before = (bundle_copy / MANIFEST).read_bytes()
    with pytest.raises(RuntimeError), edit_bundle(bundle_copy) as edit:
        (edit.stage / "other.txt").write_text("x")
        edit.add("other.txt")
        raise RuntimeError("boom")
    assert (bundle_copy / MANIFEST).read_bytes() == before
    assert not (bundle_copy / "other.txt").exists()
    load_bundle(bundle_copy)
    assert not [p for p in bundle_copy.parent.iterdir() if ".staging-" in p.name]


def test_bundle_files_get_the_usual_permissions_not_0600(tmp_path: Path) -> None:
    """A server running as another user must be able to read a bundle written by `imgcls train`."""
    import os

    from imgcls.fsio import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    "command",
    [
        ["export", "gs://bucket/models/x"],
        ["push", "gs://bucket/x", "--to", "store"],
        ["drift", "reference", "gs://b/x"],
    ],
)
def test_a_url_where_a_bundle_folder_is_needed_is_named_with_the_way_to_pull_it(command: list[str]) -> None:
    """``Path("gs://b/x")`` is ``gs:/b/x``: the message said 'no bundle at gs:/b/x: the directory does not exist'."""
    from typer.testing import CliRunner

    from imgcls.cli import app

    result = CliRunner().invoke(app, command)
    assert isinstance(result.exception, BundleError), result.output
    url = next(arg for arg in command if arg.startswith("gs://"))
    assert result.exception.message == f"{url} is a URL, and a bundle folder on this machine is needed here"
    assert "imgcls pull REF --to DIR" in (result.exception.hint or "")


def test_a_file_url_where_a_bundle_folder_is_needed_names_the_path_to_give(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=f"file://{tmp_path}/b is a URL") as info:
        load_bundle(Path(f"file://{tmp_path}/b"))
    assert info.value.hint == f"give the path itself: {tmp_path}/b"


def test_a_manifest_nested_too_deeply_is_refused_as_corrupt(bundle_copy: Path) -> None:
    """json's parser gives up at the interpreter's recursion limit: predict, serve and export died of an
    'unexpected RecursionError' (exit 1, 'report it')."""
    import os
    import subprocess
    import sys

    meta = json.loads((bundle_copy / MANIFEST).read_text())
    meta["lineage"]["note"] = "@"
    (bundle_copy / MANIFEST).write_text(json.dumps(meta).replace('"@"', "[" * 100_000 + "]" * 100_000))
    with pytest.raises(BundleError, match="nested too deeply to be a bundle manifest"):
        load_bundle(bundle_copy)
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [sys.executable, "-m", "imgcls", "predict", "-m", str(bundle_copy), "x.png"],
        capture_output=True, text=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "nested too deeply to be a bundle manifest" in run.stderr and "pull or train it again" in run.stderr
    assert "unexpected" not in run.stderr and "Traceback" not in run.stderr


def test_two_edits_of_one_bundle_at_once_lose_neither_ones_files(
    bundle_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`imgcls export --int8` beside `imgcls export --fp16` (or `drift reference`): each edit staged the bundle as
    it had loaded it, and the last swap dropped the other's file. The second edit now waits for the first and
    starts from what it wrote."""
    import threading

    inside, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with edit_bundle(bundle_copy) as edit:
                edit.write("first.txt", b"1")
                inside.set()
                release.wait(30)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            inside.set()

    def second() -> None:
        try:
            with edit_bundle(bundle_copy) as edit:
                edit.write("second.txt", b"2")
        except BaseException as exc:
            errors.append(exc)

    a = threading.Thread(target=first)
    a.start()
    assert inside.wait(30)
    b = threading.Thread(target=second)
    b.start()
    b.join(2)  # before the lock: the second edit swapped its bundle in here, while the first was still open
    release.set()
    a.join(60)
    b.join(60)
    assert not errors
    assert "waiting for another edit of a bundle in" in caplog.text  # a wait is not taken for a hang
    bundle = load_bundle(bundle_copy)
    assert {"first.txt", "second.txt"} <= set(bundle.files)
    assert (bundle_copy / "first.txt").read_bytes() == b"1" and (bundle_copy / "second.txt").read_bytes() == b"2"
    assert sorted(p.name for p in bundle_copy.parent.iterdir()) == ["b"]  # no staging folder left behind


@pytest.mark.parametrize("where", ["top", "files"])
def test_a_manifest_giving_a_key_twice_is_refused(bundle_copy: Path, where: str) -> None:
    """json kept the last of two "classes" without a word (a hand merge that left both loaded with one of them);
    another reader of the same file may take the first."""
    text = (bundle_copy / MANIFEST).read_text()
    meta = json.loads(text)
    if where == "top":
        text = text.replace('"classes": [', '"classes": ["cat", "dog"], "classes": [', 1)
        section, key = "classes", "classes"
    else:  # a wrong hash first: a reader that keeps the first key refuses the bundle, json took the second
        text = text.replace('"files": {', f'"files": {{"{WEIGHTS}": "{"0" * 64}", ', 1)
        section, key = "files", WEIGHTS
    assert json.loads(text)[section] == meta[section]  # plain json reads it, keeping the last one
    (bundle_copy / MANIFEST).write_text(text)
    with pytest.raises(BundleError, match=rf"gives the key '{key}' twice in one object") as info:
        load_bundle(bundle_copy)
    assert info.value.exit_code == 2 and "keep the one that is right" in (info.value.hint or "")


def test_an_edit_clears_the_staging_folder_a_killed_edit_left(bundle_copy: Path) -> None:
    """`imgcls export` killed mid-way (SIGKILL, the OOM killer) left `.b.staging-*` beside the bundle, holding
    hard links to every file and the half-written export, for ever."""
    killed = bundle_copy.parent / ".b.staging-k1ll3d"
    killed.mkdir()
    (killed / "model.onnx").write_bytes(b"half an export")
    then = time.time() - 600
    os.utime(killed, (then, then))
    with edit_bundle(bundle_copy) as edit:
        edit.write("extra.txt", b"hello")
    assert not killed.exists()
    assert sorted(p.name for p in bundle_copy.parent.iterdir()) == ["b"]
    assert load_bundle(bundle_copy).meta.files["extra.txt"]
