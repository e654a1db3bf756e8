"""The drift columns, their scores and the thresholds calibrated on the reference (numpy + scipy, no torch).

Scores are evidently 0.7's own: the Wasserstein distance normed by the reference's standard deviation for
numeric columns (``method="wasserstein"``), the Jensen-Shannon distance (natural log) of the class frequencies
for the predicted class (``method="jensenshannon"``). Computing them here (checked equal to evidently's in the
tests) lets the calibration resample thousands of windows in seconds.

Calibration (:func:`calibrate`): windows of ``n`` rows are drawn from the reference without replacement and
scored against the rest of it, a few hundred times for several ``n``. Both scores shrink like
``sqrt(1/n + 1/m)`` for a window of ``n`` against ``m`` reference rows, so each score is divided by that
factor and one constant per column is kept: at report time ``threshold = c * sqrt(1/n + 1/N)``.

The multi-column rule is "any column drifted", with the per-column level chosen by the min-p method
(Westfall-Young): for each resampled window, the smallest per-column empirical p-value; the per-column level
is the 5 % quantile of those minima. So a clean window raises an alarm on *any* column with about
``family_alpha`` probability, however correlated the columns are, and a change that moves one column only
(inverted images move brightness; a class-prior shift moves ``pred_class``) still fires. A share-of-columns
rule (evidently's DataDriftPreset: half the columns) missed both in the benchmark (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from imgcls.data.stats import STAT_NAMES

OUTPUT_COLUMNS = ("pred_confidence", "pred_margin", "pred_entropy")
CLASS_COLUMN = "pred_class"
FAMILY_ALPHA = 0.05  # the target false-alarm probability of one report on a clean window
CALIBRATION_WINDOWS = (100, 200, 500, 1000)  # window sizes resampled (those below half the reference)
CALIBRATION_DRAWS = 300  # windows per size


def embedding_columns(k: int) -> list[str]:
    return [f"emb_{i}" for i in range(k)]


def numeric_columns(k: int) -> list[str]:
    """Numeric drift columns in order: image statistics, model outputs, embedding components."""
    return [*STAT_NAMES, *OUTPUT_COLUMNS, *embedding_columns(k)]


def method_of(column: str) -> str:
    return "jensenshannon" if column == CLASS_COLUMN else "wasserstein"


def output_columns(probabilities: np.ndarray) -> dict[str, np.ndarray]:
    """Predicted class, confidence, margin (top-1 minus top-2) and entropy (nats) of probability rows."""
    p = np.asarray(probabilities, dtype=np.float64)
    top2 = -np.sort(-p, axis=1)[:, :2] if p.shape[1] > 1 else np.concatenate([p, np.zeros_like(p)], axis=1)
    entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)
    return {
        CLASS_COLUMN: p.argmax(axis=1).astype(np.int64),
        "pred_confidence": top2[:, 0],
        "pred_margin": top2[:, 0] - top2[:, 1],
        "pred_entropy": entropy,
    }


def wasserstein_norm(reference: np.ndarray, current: np.ndarray) -> float:
    """evidently's ``wasserstein`` score: W1(reference, current) / max(std(reference), 0.001)."""
    from scipy import stats

    norm = max(float(np.std(reference)), 0.001)
    return float(stats.wasserstein_distance(reference, current)) / norm


def class_frequencies(classes: np.ndarray, n_classes: int) -> np.ndarray:
    counts = np.bincount(np.asarray(classes, dtype=np.int64), minlength=n_classes).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def jensenshannon(reference: np.ndarray, current: np.ndarray, n_classes: int) -> float:
    """evidently's ``jensenshannon`` score of two class-id columns (natural log)."""
    from scipy.spatial import distance

    return float(distance.jensenshannon(class_frequencies(reference, n_classes), class_frequencies(current, n_classes)))


def scale(n: int, m: int) -> float:
    """How a two-sample score's null spread scales with the window size ``n`` and reference size ``m``."""
    return float(np.sqrt(1.0 / n + 1.0 / m))


def score(column: str, reference: np.ndarray, current: np.ndarray, n_classes: int) -> float:
    if column == CLASS_COLUMN:
        return jensenshannon(reference, current, n_classes)
    return wasserstein_norm(reference, current)


def calibrate(
    data: dict[str, np.ndarray],
    columns: Sequence[str],
    n_classes: int,
    *,
    seed: int = 0,
    family_alpha: float = FAMILY_ALPHA,
    windows: Sequence[int] = CALIBRATION_WINDOWS,
    draws: int = CALIBRATION_DRAWS,
) -> dict[str, object]:
    """Per-column threshold constants ``c`` from resampling the reference against itself (see the module doc).

    Returns:
        ``{"rule", "family_alpha", "column_alpha", "windows", "draws", "constants": {column: c}}``.
    """
    n_rows = len(data[columns[0]])
    sizes = [n for n in windows if n <= n_rows // 2] or [max(2, n_rows // 4)]
    rng = np.random.default_rng(seed)
    normed: list[np.ndarray] = []  # per size: (draws, columns) scores / scale
    pvalues: list[np.ndarray] = []
    for n in sizes:
        s = np.empty((draws, len(columns)))
        for r in range(draws):
            perm = rng.permutation(n_rows)
            win, rest = perm[:n], perm[n:]
            for j, col in enumerate(columns):
                values = data[col]
                s[r, j] = score(col, values[rest], values[win], n_classes) / scale(n, n_rows - n)
        normed.append(s)
        # empirical p-value of each window's score within its column: share of draws at least as large
        ranks = (s[None, :, :] >= s[:, None, :]).sum(axis=1)
        pvalues.append(ranks / draws)
    minp = np.concatenate([p.min(axis=1) for p in pvalues])
    column_alpha = float(np.quantile(minp, family_alpha))
    pooled = np.concatenate(normed)
    constants = {
        col: float(np.quantile(pooled[:, j], 1.0 - column_alpha, method="higher")) for j, col in enumerate(columns)
    }
    return {
        "rule": "any column; per-column level by min-p over resampled reference windows",
        "family_alpha": family_alpha,
        "column_alpha": column_alpha,
        "windows": sizes,
        "draws": draws,
        "threshold": "c * sqrt(1/n + 1/N) for a window of n rows against the N reference rows",
        "constants": constants,
    }


MIN_THRESHOLD = 1e-9  # a column constant in the reference (saturation of gray images): any change is drift


def threshold(constant: float, n: int, n_reference: int) -> float:
    return max(constant * scale(n, n_reference), MIN_THRESHOLD)
