"""W&B lineage for a push: a reference artifact that points at the stored version (the files stay in the store).

wandb is imported lazily (the ``monitor`` extra). The caller decides the mode (``online`` / ``offline``): with no
API key W&B would otherwise prompt or fail.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from imgcls.deps import require
from imgcls.errors import StoreError
from imgcls.store.registry import PushResult, Store

logger = logging.getLogger(__name__)


def training_run(lineage: dict[str, Any]) -> dict[str, str] | None:
    """The W&B run a bundle's lineage records (``{"id", "project", "entity"}``), if any.

    Accepts ``lineage["wandb"]`` as a dict with ``run_id``/``id``, ``project`` and ``entity``, a run path
    string ``"entity/project/run_id"``, or flat ``wandb_run_id`` / ``wandb_project`` / ``wandb_entity`` keys.
    """
    info = lineage.get("wandb") or lineage.get("wandb_run")
    if info is None and lineage.get("wandb_run_id"):
        info = {
            "run_id": lineage["wandb_run_id"],
            "project": lineage.get("wandb_project"),
            "entity": lineage.get("wandb_entity"),
        }
    if isinstance(info, str):
        parts = info.strip("/").split("/")
        if len(parts) >= 3:
            return {"entity": parts[-3], "project": parts[-2], "id": parts[-1]}
        return None
    if isinstance(info, dict):
        run_id = info.get("run_id") or info.get("id")
        if run_id:
            return {
                "id": str(run_id),
                "project": str(info.get("project") or ""),
                "entity": str(info.get("entity") or ""),
            }
    return None


def version_uri(store: Store, result: PushResult) -> str:
    """The URI of a stored version's folder (``gs://…`` or ``file://…``)."""
    uri = store.uri
    if uri.scheme == "gs":
        return f"gs://{uri.location.rstrip('/')}/{result.version.key}/"
    return (Path(uri.location) / result.version.key).as_uri() + "/"


def log_reference_artifact(
    store: Store,
    result: PushResult,
    *,
    lineage: dict[str, Any],
    mode: str,
    project: str = "imgcls",
    wandb_dir: Path | None = None,
) -> dict[str, str]:
    """Log a ``model`` reference artifact for a pushed version; returns {"artifact", "run", "mode"}.

    When the bundle records a training run, the artifact is logged from that run (resumed), so W&B shows it as
    the run's output; otherwise from a new ``push`` run.
    """
    wandb = require("wandb", feature="imgcls push --wandb")
    version = result.version
    run_info = training_run(lineage)
    init: dict[str, Any] = {"project": project, "job_type": "push", "mode": mode}
    if run_info is not None:
        init.update(id=run_info["id"], resume="allow")
        init["project"] = run_info["project"] or project
        if run_info["entity"]:
            init["entity"] = run_info["entity"]
    if wandb_dir is not None:
        wandb_dir.mkdir(parents=True, exist_ok=True)
        init["dir"] = str(wandb_dir)
    try:
        run = wandb.init(**init)
    except Exception as exc:  # wandb raises many types (UsageError, CommError, ...)
        raise StoreError(
            f"W&B could not start a run: {exc}",
            hint="set WANDB_API_KEY, or WANDB_MODE=offline to record the lineage locally",
            exit_code=1,
        ) from exc
    try:
        artifact = wandb.Artifact(
            name=version.name,
            type="model",
            description=f"imgcls bundle {version} in {store.uri}",
            metadata={
                "store": str(store.uri),
                "name": version.name,
                "version": version.seq,
                "digest": version.digest,
                "created": version.created,
                "metrics": version.metrics,
                "aliases": [m.alias for m in result.aliases],
            },
        )
        artifact.add_reference(version_uri(store, result), name="bundle", checksum=False)
        aliases = sorted({f"v{version.seq}", *(m.alias for m in result.aliases)})
        run.log_artifact(artifact, aliases=aliases)
        run_path = f"{run.entity or ''}/{run.project}/{run.id}".lstrip("/")
    finally:
        run.finish()
    logger.info("logged W&B reference artifact for %s (run %s)", version, run_path)
    return {"artifact": f"{version.name}:v{version.seq}", "run": run_path, "mode": mode}
