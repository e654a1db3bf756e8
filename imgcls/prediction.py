"""The prediction JSON, built in one place for ``predict`` (json/csv lines) and ``serve`` (responses, logs).

One image's answer is ``{"label", "class_id", "confidence", "top_k": [{"label", "class_id", "probability"}]}``,
top-k best first, ``confidence`` the first entry's probability. :class:`Prediction` is the typed form the runtime
returns; the server's hot path goes straight from a probability row to the dict with :func:`prediction_json`
(no dataclasses per request). The server's OpenAPI schema documents the same shape from
:class:`imgcls.serve.schemas.Prediction`.
This module needs numpy only (no torch, no onnxruntime).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SMALL_ROW = 64
"""Up to this many classes, one row's top-k is cheaper in plain Python than in numpy (see :func:`top_ids_row`)."""


def top_ids(probabilities: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` most probable class ids of each row of ``(N, K)`` probabilities, best first (ties: lower id first).

    ``k`` is capped at the number of classes; it must be at least 1 (the caller validates user input).
    """
    k = min(k, probabilities.shape[-1])
    if k == 1:  # the common case of the server: argmax is several times cheaper than a sort
        return probabilities.argmax(axis=-1, keepdims=True)
    return np.argsort(-probabilities, axis=-1, kind="stable")[..., :k]


def top_ids_row(values: Sequence[float], k: int) -> list[int]:
    """:func:`top_ids` for one row given as Python floats (``row.tolist()``): the server's hot path.

    The same order (best first, ties: lower id first). For a small row it is cheaper than numpy's argsort, and it
    never releases the GIL: numpy's sort does, and an event loop that lets go of the GIL mid-request waits for
    the decoding and batching threads to hand it back.
    """
    k = min(k, len(values))
    if k == 1:
        return [values.index(max(values))]  # the first maximum: the lower id on a tie
    return heapq.nlargest(k, range(len(values)), key=values.__getitem__)  # = sorted(reverse=True)[:k], stable


def prediction_json(classes: Sequence[str], probabilities: np.ndarray, ids: Iterable[int]) -> dict[str, Any]:
    """One image's prediction dict from its probability row and its top-k ``ids`` (best first, at least one)."""
    ids = ids.tolist() if isinstance(ids, np.ndarray) else ids  # Python ints: json.dumps refuses numpy's
    return _as_json([(classes[i], int(i), float(probabilities[i])) for i in ids])


def _as_json(top: Sequence[tuple[str, int, float]]) -> dict[str, Any]:
    """The one builder of the prediction JSON: ``top`` is ``(label, class_id, probability)``, best first."""
    top_k = [{"label": label, "class_id": class_id, "probability": p} for label, class_id, p in top]
    best = top_k[0]
    return {"label": best["label"], "class_id": best["class_id"], "confidence": best["probability"], "top_k": top_k}


@dataclass
class TopK:
    """One of the k most probable classes."""

    label: str
    class_id: int
    probability: float


@dataclass
class Prediction:
    """The prediction for one image: the top class and the top-k list (best first, never empty)."""

    label: str
    class_id: int
    confidence: float
    top_k: list[TopK]

    @classmethod
    def from_probabilities(cls, classes: Sequence[str], probabilities: np.ndarray, ids: Iterable[int]) -> Prediction:
        """The prediction for one probability row and its top-k ``ids`` (best first, at least one)."""
        top = [TopK(classes[i], int(i), float(probabilities[i])) for i in map(int, ids)]
        return cls(top[0].label, top[0].class_id, top[0].probability, top)

    def to_dict(self) -> dict[str, Any]:
        """The prediction JSON, exactly as :func:`prediction_json` builds it for the server."""
        return _as_json([(t.label, t.class_id, t.probability) for t in self.top_k])
