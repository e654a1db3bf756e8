"""The README's main job, `nox -s quickstart`, as a test: scripts/quickstart.py runs the whole lifecycle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_runs_the_whole_lifecycle(tmp_path: Path) -> None:
    runs = tmp_path / "qs"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "IMGCLS_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "scripts/quickstart.py", "--runs", str(runs)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "drift:         none over the served traffic" in proc.stdout
    assert "held-out PNGs:" in proc.stdout and "done in" in proc.stdout
    bundle = json.loads((runs / "bundle" / "bundle.json").read_text())
    assert bundle["metrics"]["test_top1"] >= 0.97
    assert (runs / "store").is_dir() and (runs / "drift" / "drift.json").is_file()
    assert json.loads((runs / "bench-http.json").read_text())["results"][0]["req_per_s"] > 0


def test_quickstart_refuses_to_empty_a_folder_it_did_not_make(tmp_path: Path) -> None:
    keep = tmp_path / "mine.txt"
    keep.write_text("not yours")
    proc = subprocess.run(
        [sys.executable, "scripts/quickstart.py", "--runs", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "is not a quickstart run" in proc.stderr
    assert keep.read_text() == "not yours"
