"""W&B lineage for a push: a reference artifact that points at the stored version (the files stay in the store).

``imgcls push --wandb`` logs a ``model`` artifact named after the model, whose one entry is a reference to the
stored version's folder (``checksum=False``: its digest is a function of that URI alone, so the same version
always gives the same artifact digest). It gets the store's aliases and ``store-<seq>`` (W&B ignores aliases of
the form ``v<number>``: its own version numbers, which count from 0 and are not the store's). The push leaves a
record in the store, ``<name>/wandb/<version id>.json`` (project, entity, artifact, reference, metadata), so
that later steps can find the artifact of a version:

* an alias move (``imgcls models alias``, ``push --alias``) gives that artifact the moved alias (an alias names
  one version of a collection: W&B takes it off the previous one). Online through the public API
  (``api.artifact(...)``, ``aliases.append``, ``save()``); offline, where there is no API, by logging the
  identical artifact again with the alias from a short ``alias`` run (same digest: W&B keeps the existing
  version and gives it the alias when ``wandb sync`` uploads the run). See :func:`sync_aliases`;
* ``serve --wandb`` links its run to the artifact of the version it serves (:func:`served_artifact`).

wandb is imported lazily (the ``monitor`` extra). The caller decides the mode (``online`` / ``offline``): with no
API key W&B would otherwise prompt or fail.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from imgcls.deps import require
from imgcls.errors import StoreError
from imgcls.store.registry import ID_LEN, AliasMove, PushResult, Store, Version, provenance
from imgcls.wandb_run import resolve_mode, start_run

logger = logging.getLogger(__name__)

RECORD_DIR = "wandb"  # <name>/wandb/<version id>.json: the W&B artifact a push logged for that version


def store_alias(seq: int) -> str:
    """The W&B alias that names store version ``seq`` (``store-3``)."""
    return f"store-{seq}"


def record_key(name: str, digest: str) -> str:
    return f"{name}/{RECORD_DIR}/{digest[:ID_LEN]}.json"


def wandb_record(store: Store, name: str, digest: str) -> dict[str, Any] | None:
    """The W&B artifact ``push --wandb`` logged for a version (None: it was not pushed with --wandb)."""
    got = store.backend.read(record_key(name, digest))
    if got is None:
        return None
    try:
        record = json.loads(got[0])
    except (ValueError, RecursionError):
        logger.warning("%s in %s is not JSON; ignored", record_key(name, digest), store.uri)
        return None
    if not isinstance(record, dict) or not record.get("artifact") or not record.get("reference"):
        return None
    return record


def artifact_path(record: Mapping[str, Any], alias: str) -> str:
    """``entity/project/name:alias`` (entity or project left out when the record has none)."""
    prefix = "/".join(str(p) for p in (record.get("entity"), record.get("project")) if p)
    return f"{prefix + '/' if prefix else ''}{record['artifact']}:{alias}"


def served_artifact(bundle_dir: str | Path) -> dict[str, Any] | None:
    """What a server records about the model it serves from a store: store, version and, when that version was
    pushed with ``--wandb``, its W&B artifact (``entity/project/name:store-<seq>``). None for a bundle that
    did not come from a store."""
    pulled = provenance(bundle_dir)
    if pulled is None:
        return None
    out: dict[str, Any] = {"store": pulled["store"], "store_name": pulled["name"], "store_version": pulled["version"]}
    record = wandb_record(Store.open(pulled["store"]), str(pulled["name"]), str(pulled["digest"]))
    if record is not None:
        out["artifact"] = artifact_path(record, store_alias(int(pulled["version"])))
    return out


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
    run = start_run(
        wandb,
        fail=lambda exc: StoreError(
            f"W&B could not start a run: {exc}",
            hint="set WANDB_API_KEY, or WANDB_MODE=offline to record the lineage locally",
            exit_code=1,
        ),
        directory=wandb_dir,
        quiet=False,
        **init,
    )
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
        reference = version_uri(store, result)
        artifact.add_reference(reference, name="bundle", checksum=False)
        aliases = sorted({store_alias(version.seq), *(m.alias for m in result.aliases)})
        run.log_artifact(artifact, aliases=aliases)
        run_path = f"{run.entity or ''}/{run.project}/{run.id}".lstrip("/")
        record = {
            "artifact": version.name,
            "type": "model",
            "entity": run.entity or "",
            "project": run.project,
            "reference": reference,
            "description": artifact.description,
            "metadata": artifact.metadata,
            "run": run_path,
            "mode": mode,
        }
    finally:
        run.finish()
    store.backend.write(record_key(version.name, version.digest), (json.dumps(record, indent=2) + "\n").encode())
    logger.info("logged W&B reference artifact for %s (run %s)", version, run_path)
    return {"artifact": f"{version.name}:{store_alias(version.seq)}", "run": run_path, "mode": mode}


def sync_aliases(
    store: Store,
    version: Version,
    aliases: Iterable[str],
    *,
    mode: str | None = None,
    wandb_dir: Path | None = None,
) -> dict[str, str] | None:
    """Give the W&B artifact of ``version`` the store's ``aliases`` (after an alias move); None when the version
    was not pushed with ``--wandb`` (nothing to update). Idempotent: running it again changes nothing.

    Online, the public API adds the aliases to the existing artifact version (``api.artifact(...)``,
    ``aliases.append``, ``save()``): nothing else changes. Offline there is no API: the identical reference
    artifact is logged again, with the aliases, from an ``alias`` run (same digest, so no new version);
    ``wandb sync`` applies it. (wandb adds ``latest`` to every logged artifact, so a synced offline move also
    points W&B's ``latest`` at that version.) ``mode`` None: decided only when there is something to update,
    by :func:`imgcls.wandb_run.resolve_mode` (online with a key, else offline).

    Raises:
        StoreError: W&B could not be reached or could not start a run (the store's alias has moved regardless).
        UsageError: WANDB_MODE asks for online and no API key is configured.
    """
    record = wandb_record(store, version.name, version.digest)
    wanted = sorted({a for a in aliases if a != "latest"})  # W&B keeps its own `latest`
    if record is None or not wanted:
        return None
    if mode is None:
        mode = resolve_mode(fallback="offline")
    wandb = require("wandb", feature="W&B alias updates")
    target = artifact_path(record, store_alias(version.seq))
    retry = (
        "the store's alias has moved; fix the W&B login (or set WANDB_MODE=offline) and run the same "
        "`imgcls models alias` again to update W&B"
    )
    if mode == "online":
        try:
            artifact = wandb.Api().artifact(target, type=str(record.get("type") or "model"))
            artifact.aliases.extend(a for a in wanted if a not in artifact.aliases)
            artifact.save()
        except Exception as exc:
            raise StoreError(f"W&B could not add {', '.join(wanted)} to {target}: {exc}", hint=retry) from exc
        logger.info("W&B: %s now has %s", target, ", ".join(wanted))
        return {"artifact": target, "aliases": ", ".join(wanted), "run": "-", "mode": mode}
    init: dict[str, Any] = {"project": record.get("project") or "imgcls", "job_type": "alias", "mode": mode}
    if record.get("entity"):
        init["entity"] = record["entity"]
    run = start_run(
        wandb,
        fail=lambda exc: StoreError(
            f"W&B could not start a run to add {', '.join(wanted)} to {target}: {exc}", hint=retry
        ),
        directory=wandb_dir,
        quiet=False,
        **init,
    )
    try:
        artifact = wandb.Artifact(
            name=str(record["artifact"]),
            type=str(record.get("type") or "model"),
            description=record.get("description"),
            metadata=record.get("metadata") or {},
        )
        artifact.add_reference(str(record["reference"]), name="bundle", checksum=False)
        run.log_artifact(artifact, aliases=[store_alias(version.seq), *wanted])
        run_path = f"{run.entity or ''}/{run.project}/{run.id}".lstrip("/")
    finally:
        run.finish()
    logger.info("W&B: %s now has %s (run %s)", target, ", ".join(wanted), run_path)
    return {"artifact": target, "aliases": ", ".join(wanted), "run": run_path, "mode": mode}


def sync_moves(store: Store, moves: Iterable[AliasMove], *, mode: str | None = None) -> dict[str, str] | None:
    """:func:`sync_aliases` for the alias moves of one command (they all point at one version)."""
    moves = [m for m in moves if m.alias != "latest"]
    if not moves:
        return None
    return sync_aliases(store, moves[0].version, [m.alias for m in moves], mode=mode)
