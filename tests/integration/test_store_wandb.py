"""`imgcls push --wandb`: a W&B reference artifact pointing at the stored version, offline (no key, no network)."""

from __future__ import annotations

import json
from pathlib import Path

from _store_helpers import cli_env, variant
from _wandb_offline import offline_runs

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
    assert "W&B (offline): artifact digits:store-1 in run" in res.stdout and "train123" in res.stdout
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*-train123"))
    assert len(runs) == 1, list((tmp_path / "wb").rglob("*"))[:20]
    log = b"".join(p.read_bytes() for p in runs[0].glob("*.wandb"))
    version_dir = next((store / "digits" / "versions").iterdir())
    assert version_dir.as_uri().encode() in log  # the reference points at the stored version
    # the artifact's metadata names the stored version's full digest and its aliases
    digest = json.loads((version_dir / "version.json").read_text())["digest"]
    assert f'"digest":"{digest}"'.encode() in log
    assert b'"aliases":["latest","staging"]' in log


def _alias_runs(root: Path) -> list:
    return [r for r in offline_runs(root) if r.job_type == "alias"]


def test_alias_moves_reach_the_wandb_artifact_of_a_version_pushed_with_wandb(
    store_bundle: Path, tmp_path: Path, cli
) -> None:
    store = tmp_path / "store"
    wb = tmp_path / "wb"
    env = cli_env(WANDB_MODE="offline", WANDB_DIR=str(wb), WANDB_SILENT="true")
    env.pop("WANDB_API_KEY", None)
    first = cli("push", str(store_bundle), "--to", str(store), "--name", "digits", "--wandb", env=env)
    second = cli("push", str(variant(store_bundle, tmp_path, 2)), "--to", str(store), "--name", "digits", env=env)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    (push_run,) = offline_runs(wb)
    (pushed,) = push_run.artifacts
    assert pushed.type == "model" and pushed.name == "digits" and "store-1" in pushed.aliases

    res = cli("models", "alias", str(store), "digits", "1", "production", env=env)
    assert res.returncode == 0, res.stderr
    assert "W&B (offline): imgcls/digits:store-1 now has production" in res.stdout
    (moved,) = _alias_runs(wb)
    (artifact,) = moved.artifacts
    # the same artifact (name, type, digest: one reference to the same stored folder), now with the alias
    assert (artifact.name, artifact.type, artifact.digest) == (pushed.name, pushed.type, pushed.digest)
    assert {"production", "store-1"} <= set(artifact.aliases)

    # version 2 was pushed without --wandb: moving an alias to it leaves W&B alone, and says nothing about it
    res = cli("models", "alias", str(store), "digits", "2", "staging", env=env)
    assert res.returncode == 0 and "W&B" not in res.stdout
    assert len(_alias_runs(wb)) == 1

    # push --alias on the W&B-pushed version (no --wandb this time) moves the W&B alias too
    res = cli("push", str(store_bundle), "--to", str(store), "--name", "digits", "--alias", "canary", env=env)
    assert res.returncode == 0 and "imgcls/digits:store-1 now has canary" in res.stdout, res.stdout + res.stderr
    assert {"canary", "store-1"} <= set(_alias_runs(wb)[-1].artifacts[0].aliases)

    res = cli("models", "alias", str(store), "digits", "1", "production", "--no-wandb", env=env)
    assert res.returncode == 0 and len(_alias_runs(wb)) == 2
