"""W&B from `imgcls train`: offline runs work with no network and no key; online without a key exits 2, no prompt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("wandb")

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--config", str(ROOT / "configs" / "digits.yaml"), "--img-size", "8", "--epochs", "2", "--batch-size", "64",
    "--set", "model.width=8",
]  # fmt: skip


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "NETRC"}
    return {**env, "HOME": str(home), "PYTHONPATH": str(ROOT), "WANDB_SILENT": "true"}


def test_offline_run_logs_metrics_media_and_the_bundle_artifact(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "imgcls", "train", *TINY, "--wandb", "--wandb-mode", "offline", "--out", "run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(tmp_path),
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    from imgcls.bundle import load_bundle

    bundle = load_bundle(tmp_path / "run")
    run_id = bundle.meta.lineage.extra("wandb")["run_id"]
    assert bundle.meta.lineage.extra("wandb")["mode"] == "offline"
    assert f"W&B run {run_id}" in proc.stdout
    offline = list((tmp_path / "run" / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1  # WANDB_DIR is inside the run directory, nothing under ./wandb
    assert not (tmp_path / "wandb").exists()
    records = next(offline[0].glob("run-*.wandb")).read_bytes()
    for key in (b"train/loss", b"val/top1", b"test/top1", b"confusion_matrix", b"sample_predictions"):
        assert key in records, key
    assert b"digits-resnet8" in records  # the bundle artifact (type model) is in the run's records
    assert list((offline[0] / "files" / "media" / "images").glob("confusion_matrix_image_*.png"))
    # The predictions table travels as a run-table artifact whose images are files of their own.
    assert records.count(b"media/images/") >= 32
    assert b"label_smoothing" in records  # the resolved config


def test_online_without_api_key_exits_2_without_prompting(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "imgcls", "train", *TINY, "--wandb", "--wandb-mode", "online", "--out", "run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(tmp_path),
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
    assert "API key" in proc.stderr and "wandb login" in proc.stderr and "offline" in proc.stderr
    assert not (tmp_path / "run").exists()
