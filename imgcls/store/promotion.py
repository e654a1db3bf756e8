"""The promotion gate: an alias may point only at a version that ``imgcls serve`` would load and that meets
the bundle's own metric requirements.

Without it, ``imgcls models alias … production`` happily pointed at a bundle with no ONNX export (top-1 0.31):
every watching server refused it and kept serving the old version, while the store said ``production→3``.
The gate reads only the stored ``bundle.json`` (no download of the model files).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from imgcls.bundle import BundleMeta
from imgcls.errors import GateError, UsageError

SERVED_MODEL = "model.onnx"  # what `imgcls serve` loads by default (runtime.MODEL_FILES["fp32"])

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}
_REQUIREMENT_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(>=|<=|==|>|<)\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Requirement:
    """``METRIC OP VALUE`` on the bundle's own ``metrics`` (e.g. ``test_top1>=0.9``)."""

    metric: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str) -> Requirement:
        match = _REQUIREMENT_RE.match(text)
        if match is None:
            raise UsageError(
                f"--require {text!r} is not METRIC>=VALUE",
                hint="e.g. --require test_top1>=0.9 (operators >= > <= < ==; metrics as in `imgcls models show`)",
            )
        return cls(match.group(1), match.group(2), float(match.group(3)))

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"

    def problem(self, metrics: Mapping[str, Any]) -> str | None:
        """Why ``metrics`` fail this requirement, or None when they meet it."""
        value = metrics.get(self.metric)
        if isinstance(value, bool) or not isinstance(value, int | float):
            have = ", ".join(k for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool))
            return f"it has no numeric metric {self.metric!r} (it has: {have or 'none'})"
        if not _OPS[self.op](float(value), self.value):
            return f"{self.metric} is {value:g}, and {self} is required"
        return None


def parse_requirements(texts: Iterable[str]) -> list[Requirement]:
    return [Requirement.parse(part) for text in texts for part in text.split(",") if part.strip()]


def serving_problems(meta: BundleMeta) -> list[str]:
    """Why ``imgcls serve`` would refuse a bundle with this manifest (empty: it would serve it)."""
    problems = []
    if SERVED_MODEL not in meta.files or meta.export is None:
        problems.append("it has no ONNX export (model.onnx)")
    for precision, model in (meta.export.models if meta.export is not None else {}).items():
        problems += model.gate_problems(precision)
    return problems


def check_promotion(
    meta: BundleMeta, requirements: Iterable[Requirement], *, what: str, alias: str, bundle_hint: str
) -> None:
    """Raise GateError when ``what`` may not become ``alias``: serve would refuse it, or a requirement fails.

    Args:
        meta: the version's manifest.
        requirements: ``--require`` clauses on its metrics.
        what: the version, for the message (``digits:3``).
        alias: the alias being moved.
        bundle_hint: how to fix a missing export (e.g. ``imgcls export runs/digits && imgcls push …``).
    """
    problems = serving_problems(meta)
    metrics = meta.metrics.to_dict()
    failed = [p for r in requirements if (p := r.problem(metrics))]
    if not problems and not failed:
        return
    if problems:
        hint = f"{bundle_hint}; or pass --force to move the alias anyway (servers will refuse it)"
    else:
        hint = "promote a better version, or pass --force to move the alias anyway"
    raise GateError(f"{what} cannot become @{alias}: " + "; ".join(problems + failed), hint=hint)
