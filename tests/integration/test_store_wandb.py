"""`imgcls push --wandb`: a W&B reference artifact pointing at the stored version, offline (no key, no network)."""

from __future__ import annotations

import json
from pathlib import Path

from _store_helpers import cli_env

from imgcls.bundle import read_manifest, write_manifest


def test_push_logs_a_reference_artifact_offline(store_bundle: Path, tmp_path: Path, cli) -> None:
    meta = read_manifest(store_bundle)
    meta.lineage = meta.lineage.model_copy(
        update={"wandb": {"run_id": "train123", "project": "digits-runs", "entity": ""}}
    )
    write_manifest(store_bundle, meta, list(meta.files))
    store = tmp_path / "store"
    env = cli_env(WANDB_MODE="offline", WANDB_DIR=str(tmp_path / "wb"), WANDB_SILENT="true")
    env.pop("WANDB_API_KEY", None)
    res = cli(
        "push", str(store_bundle), "--to", str(store), "--name", "digits", "--alias", "staging", "--wandb", env=env
    )
    assert res.returncode == 0, res.stderr
    assert "W&B (offline): artifact digits:v1 in run" in res.stdout and "train123" in res.stdout
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*-train123"))
    assert len(runs) == 1, list((tmp_path / "wb").rglob("*"))[:20]
    log = b"".join(p.read_bytes() for p in runs[0].glob("*.wandb"))
    version_dir = next((store / "digits" / "versions").iterdir())
    assert version_dir.as_uri().encode() in log  # the reference points at the stored version
    # the artifact's metadata names the stored version's full digest and its aliases
    digest = json.loads((version_dir / "version.json").read_text())["digest"]
    assert f'"digest":"{digest}"'.encode() in log
    assert b'"aliases":["latest","staging"]' in log
