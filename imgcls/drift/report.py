"""``imgcls drift report``: the server's traffic (or a folder of images) against the bundle's drift reference.

Torch-free: the current window comes from prediction logs (:mod:`imgcls.drift.logs`: SQLite files, or JSON-lines
segments in a folder or under a ``gs://`` prefix) or from a folder of images run through
:class:`imgcls.runtime.Predictor`, which computes the same model outputs and embedding the server logs. Every
column of the reference is scored the way evidently scores it (:mod:`imgcls.drift.columns`) against a threshold
calibrated on the reference for this window's size; the verdict is "drift" when any column is over its threshold.
The evidently ``Report`` (one ``ValueDrift`` per column, with those thresholds) gives the HTML.

Example:
    result = drift_report("runs/fashion", log="~/.cache/imgcls/serve/predictions.sqlite", since="24h")
    print(result.summary["drift"], [c["name"] for c in result.summary["columns"] if c["drifted"]])
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgcls.data.stats import STAT_NAMES
from imgcls.drift import columns as C
from imgcls.drift.logs import Window, iso_time, read_log
from imgcls.drift.reference import Reference, calibrated, load_reference
from imgcls.errors import UsageError

logger = logging.getLogger(__name__)

DRIFT_EXIT_CODE = 4  # `imgcls drift report --fail-on-drift` when drift is found (0: none; 2: usage/bad input)
MIN_ROWS = 100  # fewer rows in the window: a warning and no verdict


# --- the window of a folder of images ---------------------------------------------------------------------


def read_images(predictor: Any, folder: str | Path, batch_size: int = 64) -> Window:
    """The window of a folder of images: decoded, prepared and predicted by the runtime; the statistics of the
    prepared model input, by the server's function (the definition of :mod:`imgcls.data.stats`).

    Raises:
        UsageError: no images in the folder.
    """
    from imgcls.data.decode import image_suffixes
    from imgcls.data.stats import images_stats
    from imgcls.errors import ImageError

    root = Path(folder)
    if not root.is_dir():
        raise UsageError(f"--images {folder} is not a folder")
    wanted = set(image_suffixes(allow_webp=getattr(predictor, "allow_webp", False)))
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in wanted)
    if not paths:
        raise UsageError(f"--images {folder}: no {'/'.join(sorted(wanted))} files in this folder")
    stats, probs, embs, skipped = [], [], [], 0
    for start in range(0, len(paths), batch_size):
        arrays = []
        for path in paths[start : start + batch_size]:
            try:
                arrays.append(predictor.prepare(predictor.decode(path)))
            except ImageError:
                skipped += 1
        if not arrays:
            continue
        stats.extend(images_stats(arrays))  # of the model's input, as the reference and the server compute them
        pr, emb = predictor.infer_with_embedding(np.stack(arrays))
        probs.append(pr)
        if emb is not None:
            embs.append(emb)
    if not probs:
        raise UsageError(f"--images {folder}: none of its {len(paths)} files decodes as an image")
    if skipped:
        logger.warning("%d files of %s did not decode and were left out", skipped, folder)
    p = np.concatenate(probs)
    data: dict[str, np.ndarray] = {n: np.array([s.as_dict()[n] for s in stats]) for n in STAT_NAMES}
    data.update(C.output_columns(p))
    if embs:
        e = np.concatenate(embs)
        data.update({f"emb_{i}": e[:, i].astype(np.float64) for i in range(e.shape[1])})
    window = Window(data, len(p), str(folder))
    window.data["_probabilities"] = p
    return window


# --- comparing ----------------------------------------------------------------------------------------------


def _calibrated_confidence(window: Window, temperature: float, n_classes: int) -> np.ndarray:
    """Each row's calibrated top-1 probability: exact from full probabilities; from a log's top-k list, with the
    probability mass outside the top-k spread evenly over the other classes (exact when k = all classes)."""
    if "_probabilities" in window.data:
        return calibrated(window.data["_probabilities"], temperature).max(axis=1)
    out = np.empty(window.rows)
    for i, text in enumerate(window.data["_top_k"]):
        top = [t["probability"] for t in json.loads(text)] or [window.data["pred_confidence"][i]]
        rest_classes = n_classes - len(top)
        rest = max(0.0, 1.0 - sum(top))
        logits = [np.log(max(p, 1e-12)) / temperature for p in top]
        if rest_classes > 0 and rest > 0:
            logits += [np.log(rest / rest_classes) / temperature] * rest_classes
        z = np.exp(np.array(logits) - max(logits))
        out[i] = z[0] / z.sum()
    return out


def _describe(name: str, ref: np.ndarray, cur: np.ndarray, classes: list[str]) -> str:
    """A drifted column in words: "brightness rose from 0.29 to 0.52"."""
    if name == C.CLASS_COLUMN:
        k = len(classes)
        a, b = C.class_frequencies(ref, k), C.class_frequencies(cur, k)
        i = int(np.argmax(np.abs(b - a)))
        verb = "rose" if b[i] > a[i] else "fell"
        return f"share of predicted '{classes[i]}' {verb} from {a[i]:.0%} to {b[i]:.0%}"
    label = {
        "pred_confidence": "confidence", "pred_margin": "margin (top-1 minus top-2)",
        "pred_entropy": "prediction entropy",
    }.get(name, name.replace("emb_", "embedding component "))  # fmt: skip
    ma, mb, sa, sb = float(np.mean(ref)), float(np.mean(cur)), float(np.std(ref)), float(np.std(cur))
    if abs(mb - ma) >= 0.25 * max(sa, 1e-12) or abs(sb - sa) < 0.25 * max(sa, 1e-12):
        verb = "rose" if mb > ma else "fell"
        return f"{label} {verb} from {_num(ma)} to {_num(mb)} (mean)"
    verb = "widened" if sb > sa else "narrowed"
    return f"{label} {verb}: spread {_num(sa)} -> {_num(sb)} (std), mean {_num(ma)} -> {_num(mb)}"


def _num(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 0.01 and v != 0 else f"{v:.2f}"


def compare(reference: Reference, window: Window) -> dict[str, Any]:
    """Score every column the window has, apply the calibrated thresholds; the drift.json summary (without HTML)."""
    ref, cal = reference.data, reference.section.thresholds
    n_ref, classes = reference.size, reference.bundle.classes
    needed = min(MIN_ROWS, min(cal.windows))
    predicted = window.data.get(C.CLASS_COLUMN)
    if predicted is not None and len(predicted) and int(predicted.max()) >= reference.n_classes:
        over = int((predicted >= reference.n_classes).sum())
        raise UsageError(
            f"{window.source}: {over} row(s) of this model predict class {int(predicted.max())}, but it has "
            f"{reference.n_classes} classes (0 to {reference.n_classes - 1}); the log is damaged or not this model's",
            hint="point --log at the log of the server that ran this --model",
        )
    columns, skipped = [], []
    for entry in reference.section.columns:
        name = entry.name
        cur = window.data.get(name)
        if cur is None:
            skipped.append(name)
            continue
        cur = cur[~np.isnan(cur)] if cur.dtype.kind == "f" else cur
        if len(cur) < needed:
            skipped.append(name)
            continue
        score = C.score(name, ref[name], cur, reference.n_classes)
        thr = C.threshold(cal.constants[name], len(cur), n_ref)
        drifted = bool(score >= thr)
        columns.append(
            {
                "name": name,
                "method": C.method_of(name),
                "score": round(score, 6),
                "threshold": round(thr, 6),
                "drifted": drifted,
                "rows": len(cur),
                "reference_mean": None if name == C.CLASS_COLUMN else float(np.mean(ref[name])),
                "current_mean": None if name == C.CLASS_COLUMN else float(np.mean(cur)),
                "description": _describe(name, ref[name], cur, classes) if drifted else None,
            }
        )
    warnings = []
    verdict: bool | None
    if window.rows < needed:
        verdict = None
        warnings.append(
            f"only {window.rows} rows of this model in the window: a verdict needs at least {needed} "
            f"(thresholds are calibrated from {needed} rows up)"
        )
    else:
        verdict = any(c["drifted"] for c in columns)
    if skipped:
        warnings.append(f"not compared (missing from the window): {', '.join(skipped)}")
    conf = _calibrated_confidence(window, reference.temperature, reference.n_classes)
    estimate = float(conf.mean())
    half = 1.96 * float(np.sqrt((conf * (1 - conf)).sum())) / max(len(conf), 1)
    bundle = reference.bundle
    return {
        "drift": verdict,
        "columns": columns,
        "drifted_columns": [c["name"] for c in columns if c["drifted"]],
        "rule": cal.rule,
        "false_alarm_target": cal.family_alpha,
        "sample_sizes": {
            "reference": n_ref,
            "current": window.rows,
            "other_models": sum(window.other_models.values()),
        },
        "other_models": window.other_models,
        "window": {
            "source": window.source,
            "first": iso_time(window.first),
            "last": iso_time(window.last),
        },
        "model": {"name": bundle.name, "version": _version(bundle), "sha256": bundle.digest},
        "accuracy": {
            "estimated": round(estimate, 4),
            "interval": [round(max(0.0, estimate - half), 4), round(min(1.0, estimate + half), 4)],
            "method": "mean temperature-calibrated confidence (CBPE-style), 95 % interval from its binomial variance",
            "reference": reference.section.calibration.reference_accuracy,
            "reference_estimated": reference.section.calibration.estimated_accuracy,
        },
        "warnings": warnings,
    }


def _version(bundle: Any) -> str:
    try:
        from imgcls.store import provenance

        pulled = provenance(bundle.path)
    except ModuleNotFoundError:
        pulled = None
    return str(pulled["version"]) if pulled else bundle.digest[:12]


def evidently_html(reference: Reference, window: Window, summary: dict[str, Any], path: Path) -> None:
    """The evidently Report (one ValueDrift per compared column, with its calibrated threshold) as HTML."""
    from imgcls.deps import require

    require("evidently", feature="imgcls drift report")
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    names = [c["name"] for c in summary["columns"]]
    numeric = [n for n in names if n != C.CLASS_COLUMN]
    categorical = [n for n in names if n == C.CLASS_COLUMN]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)

    def frame(data: dict[str, np.ndarray]) -> Any:
        df = pd.DataFrame({n: data[n] for n in names})
        if categorical:
            df[C.CLASS_COLUMN] = [reference.bundle.classes[int(i)] for i in df[C.CLASS_COLUMN]]
        return Dataset.from_pandas(df, data_definition=definition)

    metrics = [ValueDrift(column=c["name"], method=c["method"], threshold=c["threshold"]) for c in summary["columns"]]
    snapshot = Report(metrics).run(current_data=frame(window.data), reference_data=frame(reference.data))
    path.write_text(script_safe_html(snapshot.get_html_str(as_iframe=False)), encoding="utf-8")


_DATA_BLOCK = re.compile(r"<script>\s*var metric_\w+ = ")


def script_safe_html(text: str) -> str:
    r"""evidently's report HTML with its embedded data unable to end the ``<script>`` that holds it.

    evidently puts the report's data into an inline ``<script>`` as ``json.dumps`` text, which leaves ``<``,
    ``>`` and ``&`` as they are: a class name ``</script><img src=x onerror=...>`` (a bundle's class names are
    whatever its bundle.json says) ended the script and ran as HTML when the report was opened. In that block
    (JavaScript ``var`` statements of JSON values; JSON has no raw newline, so its first ``\n</script>`` is its
    end) those characters can only be inside strings, where ``\u003c``, ``\u003e`` and ``\u0026`` are the same
    characters to the script and nothing to the HTML parser.
    """
    out, pos = [], 0
    for m in _DATA_BLOCK.finditer(text):
        if m.start() < pos:
            continue
        end = text.find("\n</script>", m.end())
        end = len(text) if end < 0 else end
        body = text[m.end() : end].replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        out += [text[pos : m.end()], body]
        pos = end
    out.append(text[pos:])
    return "".join(out)


@dataclass
class DriftResult:
    summary: dict[str, Any]
    out: Path | None
    html: Path | None


def drift_report(
    model: str | Path,
    *,
    log: str | Path | None = None,
    images: str | Path | None = None,
    since: str | None = None,
    last: int | None = None,
    out: str | Path | None = None,
    precision: str = "fp32",
    html: bool = True,
) -> DriftResult:
    """Compare a window of traffic (``log``) or a folder (``images``) with the model's drift reference.

    Writes ``drift.json`` and ``report.html`` into ``out`` when given.

    Raises:
        UsageError: bad arguments, missing/foreign/empty logs, a window that selects nothing.
        BundleError: no reference in the bundle (hint: ``imgcls drift reference``), a corrupted one.
    """
    from imgcls.runtime import resolve_model

    if (log is None) == (images is None):
        raise UsageError("give exactly one of --log and --images")
    if images is not None and (since is not None or last is not None):
        raise UsageError("--since and --last select rows of a --log; a folder of --images is compared whole")
    bundle_dir = resolve_model(model)
    reference = load_reference(bundle_dir)
    if log is not None:
        window = read_log(log, model_sha256=reference.bundle.digest, since=since, last=last)
    else:
        from imgcls.runtime import Predictor

        predictor = Predictor.from_bundle(reference.bundle, precision=precision)
        if predictor.embedding_output is None:
            logger.warning("the model has no embedding output: re-export it to compare the embedding too")
        window = read_images(predictor, images)  # type: ignore[arg-type]
    summary = compare(reference, window)
    out_dir = Path(out) if out is not None else None
    html_path = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        if html and summary["columns"]:
            html_path = out_dir / "report.html"
            evidently_html(reference, window, summary, html_path)
            summary["html"] = html_path.name
        (out_dir / "drift.json").write_text(json.dumps(summary, indent=2) + "\n")
    return DriftResult(summary, out_dir, html_path)
