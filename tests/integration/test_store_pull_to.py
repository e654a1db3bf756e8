"""`imgcls pull --to`: a destination that is not a local folder is refused before anything is downloaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from _store_helpers import cli_env

from imgcls.store import Store


def pull_in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``imgcls pull ARGS`` run from ``cwd`` (where a URL taken for a path would create a folder ``gs:``)."""
    return subprocess.run(
        [sys.executable, "-m", "imgcls", "pull", *args], capture_output=True, text=True, env=cli_env(), cwd=cwd
    )


def test_pull_to_a_url_is_refused_and_writes_no_local_folder_named_after_the_scheme(
    store_bundle: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    Store.open(store).push(store_bundle, name="digits")
    work = tmp_path / "work"
    work.mkdir()
    for url in ("gs://bucket/models/digits", "s3://bucket/digits"):
        res = pull_in(work, f"{store}/digits@latest", "--to", url)
        assert res.returncode == 2, (url, res.stdout, res.stderr)
        assert f"--to {url} is a URL" in res.stderr and "Traceback" not in res.stderr
        assert "pulled" not in res.stdout
    assert list(work.iterdir()) == []  # was work/gs:/bucket/models/digits, a full copy of the bundle


def test_pull_to_below_a_file_names_the_file_before_downloading(store_bundle: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    Store.open(store).push(store_bundle, name="digits")
    (tmp_path / "notes").write_text("mine")
    res = pull_in(tmp_path, f"{store}/digits@latest", "--to", str(tmp_path / "notes" / "out"))
    assert res.returncode == 2 and f"{tmp_path / 'notes'} is a file, not a folder" in res.stderr, res.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary download folder
