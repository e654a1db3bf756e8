"""Read what an offline W&B run recorded: its ``run-*.wandb`` file, record by record (imported by name).

The file is wandb's transaction log: a 7-byte header (``:W&B``, magic, version), then LevelDB-log framing
(32 KiB blocks; each chunk has a crc32, a 2-byte length and a type: full, first, middle, last) around
``wandb_internal_pb2.Record`` protobufs. Reading the records themselves, rather than grepping the bytes, lets a
test assert what a user would see in the synced run: history rows, summary, config, logged and used artifacts.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_BLOCK = 32 * 1024
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    out, pos, pending = [], _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # the rest of a block too small for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack_from("<IHB", data, pos)
        pos += _HEADER
        chunk = data[pos : pos + length]
        pos += length
        if kind == _FULL:
            pending = chunk
        elif kind == _FIRST:
            pending = chunk
            continue
        elif kind == _MIDDLE:
            pending += chunk
            continue
        elif kind == _LAST:
            pending += chunk
        else:
            continue
        record = pb.Record()
        record.ParseFromString(pending)
        out.append(record)
    return out


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


@dataclass
class OfflineRun:
    """One offline run as recorded."""

    path: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    job_type: str = ""
    group: str = ""
    started_ns: int = 0  # the run's start time: the folder names only the second
    artifacts: list[Any] = field(default_factory=list)  # ArtifactRecord protobufs (name, type, aliases, manifest)
    used_artifacts: list[Any] = field(default_factory=list)

    def tables(self, name: str) -> list[dict[str, Any]]:
        """The increments of a table logged under ``name``, oldest first (each ``{"columns", "data"}``)."""
        files = sorted(
            (self.path / "files" / "media" / "table").glob(f"{name}_*.table.json"),
            key=lambda p: int(p.name[len(name) + 1 :].split("_")[0]),
        )
        return [json.loads(p.read_text()) for p in files]

    def rows(self, name: str) -> tuple[list[str], list[list[Any]]]:
        """The columns and all rows of an incremental table."""
        parts = self.tables(name)
        assert parts, f"no table {name!r} in {self.path}"
        return parts[0]["columns"], [row for part in parts for row in part["data"]]

    def values(self, key: str) -> list[Any]:
        """Every logged value of a history key, in order."""
        return [row[key] for row in self.history if key in row]


def read_run(run_dir: Path) -> OfflineRun:
    """Parse ``run_dir/run-*.wandb`` (an ``offline-run-*`` folder)."""
    files = list(run_dir.glob("run-*.wandb"))
    assert len(files) == 1, files
    run = OfflineRun(run_dir)
    for record in _records(files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            run.summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "config":
            run.config.update({_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "run":
            run.job_type = record.run.job_type
            run.group = record.run.run_group
            run.started_ns = record.run.start_time.ToNanoseconds()
            run.config.update({_key(i): json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "artifact":
            run.artifacts.append(record.artifact)
        elif kind == "use_artifact":
            run.used_artifacts.append(record.use_artifact)
    # wandb stores each config key as {"value": ...}
    run.config = {k: (v["value"] if isinstance(v, dict) and "value" in v else v) for k, v in run.config.items()}
    return run


def offline_runs(root: Path) -> list[OfflineRun]:
    """Every offline run under ``root`` (``root/wandb/offline-run-*`` or deeper), oldest first: by start time, since
    two runs started in the same second have folder names that sort by their random ids."""
    runs = [read_run(p) for p in root.rglob("offline-run-*") if p.is_dir()]
    return sorted(runs, key=lambda r: (r.started_ns, str(r.path)))
