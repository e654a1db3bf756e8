"""Bench reports on disk: JSON, the chart, and the comparison with a baseline report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from imgcls.errors import UsageError

DEFAULT_REGRESSION = 0.10  # a row more than 10 % slower than the baseline's is a regression


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    from imgcls.bundle import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(report, indent=2, allow_nan=False, default=_jsonable) + "\n").encode())
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


_KINDS = {"inprocess": "in process (bench --model)", "http": "over HTTP (bench --url)"}


def load_report(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """A report written by ``imgcls bench --json`` (of ``kind``, ``inprocess`` or ``http``, when given).

    Raises:
        UsageError: not readable, not a bench report, or a report of the other kind.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested deeper than its parser goes
        raise UsageError(f"--baseline {path}: cannot read it ({exc})", hint="pass a file from `bench --json`") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise UsageError(f"--baseline {path} is not an imgcls bench report (no 'results' list)")
    found = data.get("kind", "inprocess")
    if kind is not None and found != kind:
        raise UsageError(
            f"--baseline {path} is a report measured {_KINDS.get(found, found)}; this run measures {_KINDS[kind]}",
            hint="compare with a --json report of the same kind of run",
        )
    return data


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    for field in ("engine", "precision"):
        if field in row:
            return (row.get("engine"), row.get("precision"), row.get("batch"), row.get("threads"))
    return (row.get("concurrency"), row.get("rate"))


def compare(
    report: dict[str, Any], baseline: dict[str, Any], threshold: float = DEFAULT_REGRESSION
) -> list[dict[str, Any]]:
    """One entry per row present in both: ``{key, current, baseline, ratio, regression}``.

    A row regresses when its throughput falls below ``(1 - threshold)`` × the baseline's, or when it passed
    (had a speed) in the baseline and now fails its gate or errors.
    """
    metric = "img_per_s" if report.get("kind", "inprocess") == "inprocess" else "req_per_s"
    base = {_key(r): r for r in baseline["results"]}
    out = []
    for row in report["results"]:
        old = base.get(_key(row))
        if old is None or not old.get(metric):
            continue
        new_value = row.get(metric)
        ratio = (new_value / old[metric]) if new_value else 0.0
        out.append(
            {
                "key": dict(zip(("engine", "precision", "batch", "threads"), _key(row), strict=False))
                if metric == "img_per_s"
                else {"concurrency": row.get("concurrency"), "rate": row.get("rate")},
                "current": new_value,
                "baseline": old[metric],
                "ratio": ratio,
                "regression": ratio < 1 - threshold,
                "status": row.get("status", "ok"),
            }
        )
    return out


def chart(report: dict[str, Any], path: str | Path) -> tuple[Path | None, str]:
    """A PNG bar chart of img/s per engine × precision, one group per batch size: ``(path or None, note)``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None, "chart skipped: matplotlib is not installed (pip install 'imgcls[train]')"
    rows = [r for r in report["results"] if r.get("img_per_s")]
    if not rows:
        return None, "chart skipped: no row has a speed"
    batches = sorted({r["batch"] for r in rows})
    series = sorted({(r["engine"], r["precision"], r["threads"]) for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(4 + 3 * len(batches), 4), squeeze=False)
    for ax, batch in zip(axes[0], batches, strict=True):
        labels, values = [], []
        for engine, precision, threads in series:
            match = [
                r
                for r in rows
                if (r["engine"], r["precision"], r["threads"], r["batch"]) == (engine, precision, threads, batch)
            ]
            if match:
                labels.append(f"{engine}\n{precision} ×{threads}")
                values.append(match[0]["img_per_s"])
        ax.bar(range(len(values)), values, color="#4477aa")
        ax.set_xticks(range(len(values)), labels, fontsize=7)
        ax.set_title(f"batch {batch}")
        ax.set_ylabel("img/s")
    machine = report.get("machine", {})
    fig.suptitle(
        f"{report.get('model', {}).get('bundle', '')} — {machine.get('cpu', '')} "
        f"({' '.join(machine.get('isa', [])[-4:])}); timed: {report.get('timed')}",
        fontsize=8,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path, f"chart written to {path}"
