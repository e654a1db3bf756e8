"""Helpers for the store tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "imgcls-test"


def variant(bundle: Path, tmp_path: Path, i: int) -> Path:
    """A copy of ``bundle`` with a different manifest (metrics.variant = i): a different version."""
    from imgcls.bundle import read_manifest, write_manifest

    dest = tmp_path / f"variant-{i}"
    shutil.copytree(bundle, dest)
    meta = read_manifest(dest)
    meta.metrics = meta.metrics.model_copy(update={"variant": i})
    write_manifest(dest, meta, list(meta.files))
    return dest


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def flip_stored_byte(store_uri: str, version_key: str, rel: str) -> None:
    """Flip one byte of a stored object behind the store's back (a corrupted object at rest)."""
    from imgcls.store import Store

    store = Store.open(store_uri)
    key = f"{version_key}/{rel}"
    if store.uri.scheme == "file":
        path = Path(store.uri.location) / key
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        return
    got = store.backend.read(key)
    assert got is not None
    data = bytearray(got[0])
    data[len(data) // 2] ^= 0x01
    store.backend.write(key, bytes(data))  # an unconditional overwrite, as bit rot or a bad actor would


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for `python -m imgcls` subprocesses (the emulator address is inherited when set)."""
    env = dict(os.environ)
    env.update(PYTHONPATH=str(ROOT), COLUMNS="200", NO_COLOR="1", **extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m imgcls ARGS`` and return the completed process (exit code, stdout, stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "imgcls", *args],
        capture_output=True,
        text=True,
        env=env or cli_env(),
        timeout=timeout,
        cwd=ROOT,
    )
