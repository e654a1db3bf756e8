"""The run directory: its name, the checks before a run starts in it, the metrics log, and the final swap.

While training, ``runs/<name>/`` holds ``config.yaml``, ``metrics.jsonl`` and ``checkpoints/``; at the end the
bundle is assembled in a hidden sibling directory and swapped in with :func:`swap_in`, so a half-written
bundle never exists.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from pathlib import Path
from typing import Any

from imgcls.bundle import MANIFEST
from imgcls.config import RunConfig, config_leaves
from imgcls.errors import UsageError
from imgcls.fsio import atomic_write_bytes, replace_dir
from imgcls.train.checkpoint import has_checkpoint

METRICS_LOG = "metrics.jsonl"
METRICS = "metrics.json"
CONFIG = "config.yaml"
CONFUSION_PNG = "confusion_matrix.png"


def slug(text: str) -> str:
    """Lower-case ``[a-z0-9._-]`` form of a dataset or model name (``folder:/x/Pets`` -> ``folder-pets``)."""
    text = text.strip()
    if text.startswith("folder:"):
        text = "folder-" + Path(text[len("folder:") :].rstrip("/")).name
    s = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.")
    return s or "run"


def default_run_dir(cfg: RunConfig, now: _dt.datetime | None = None) -> Path:
    """``runs/<data>-<model>-<timestamp>``."""
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{slug(cfg.data.name)}-{slug(cfg.model.arch)}-{stamp}"


def bundle_name(cfg: RunConfig) -> str:
    return cfg.name or f"{slug(cfg.data.name)}-{slug(cfg.model.arch)}"[:64]


def check_new_run_dir(run_dir: Path) -> None:
    """UsageError unless ``run_dir`` can be made (no file where a folder above it should be) and is absent or an
    empty directory (never train over a run or a bundle); checked before the data loads."""
    from imgcls.fsio import check_output

    check_output(run_dir, "--out", folder=True)
    if not run_dir.exists():
        return
    if has_checkpoint(run_dir):
        raise UsageError(
            f"--out {run_dir} holds an interrupted run",
            hint=f"continue it with `imgcls train --resume {run_dir}`, or choose another --out",
        )
    if (run_dir / MANIFEST).exists():
        raise UsageError(f"--out {run_dir} already holds a bundle", hint="choose another --out (bundles are immutable)")
    if any(run_dir.iterdir()):
        raise UsageError(f"--out {run_dir} exists and is not empty", hint="choose a new or empty directory")


def config_diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    """``key: old -> new`` for every leaf that differs between two config trees."""
    la, lb = config_leaves(a), config_leaves(b)
    changed = [k for k in sorted(set(la) | set(lb)) if la.get(k) != lb.get(k)]
    return ", ".join(f"{k}: {la.get(k)!r} -> {lb.get(k)!r}" for k in changed)


def append_metrics_line(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one epoch's record to ``metrics.jsonl`` (fsync'd: the log survives a kill)."""
    with open(run_dir / METRICS_LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def rewrite_metrics_log(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """``metrics.jsonl`` holding exactly ``history`` (a resume drops lines of an epoch the checkpoint lacks)."""
    atomic_write_bytes(run_dir / METRICS_LOG, "".join(json.dumps(r) + "\n" for r in history).encode())


def swap_in(stage: Path, run_dir: Path) -> None:
    """Make ``stage`` the run directory in one step; the old run directory (checkpoints) is removed."""
    replace_dir(stage, run_dir)
