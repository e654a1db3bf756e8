"""Training plots: matplotlib's Agg canvas (imported lazily, no pyplot global state); a plain Pillow rendering
when matplotlib is not installed (e.g. a GPU box with only torch and the core dependencies)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Annotate cells with counts and label every tick up to this many classes.
_ANNOTATE_MAX = 20
_TICKS_MAX = 40


def save_confusion_matrix(confusion: np.ndarray, classes: list[str], path: Path, *, title: str = "") -> Path:
    """Write a row-normalised confusion-matrix heat map (rows: true class, columns: predicted) as a PNG."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        return _confusion_matrix_pillow(confusion, classes, Path(path), title=title)
    from matplotlib.figure import Figure

    n = len(classes)
    support = confusion.sum(axis=1, keepdims=True)
    rates = np.divide(confusion, np.maximum(support, 1), dtype=np.float64)
    side = float(np.clip(0.35 * n + 2.5, 4.0, 16.0))
    fig = Figure(figsize=(side + 1.0, side), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if n <= _TICKS_MAX:
        ax.set_xticks(range(n), labels=classes, rotation=90, fontsize=8)
        ax.set_yticks(range(n), labels=classes, fontsize=8)
    if n <= _ANNOTATE_MAX:
        for i in range(n):
            for j in range(n):
                if confusion[i, j]:
                    color = "white" if rates[i, j] > 0.5 else "black"
                    ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=7, color=color)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _confusion_matrix_pillow(confusion: np.ndarray, classes: list[str], path: Path, *, title: str = "") -> Path:
    """The same heat map drawn with Pillow only: cells shaded by the share of the true class, counts when few."""
    from PIL import Image, ImageDraw

    n = len(classes)
    cell = int(np.clip(600 // max(n, 1), 4, 48))
    label_w = 0 if n > _TICKS_MAX else 8 * max(len(c) for c in classes) + 8
    top = 24 if title else 4
    img = Image.new("RGB", (label_w + n * cell + 4, top + n * cell + label_w // 2 + 20), "white")
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((4, 4), title, fill="black")
    support = np.maximum(confusion.sum(axis=1), 1)
    for i in range(n):
        for j in range(n):
            rate = confusion[i, j] / support[i]
            shade = int(255 - 200 * rate)
            x0, y0 = label_w + j * cell, top + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=(shade, shade, 255), outline=(230, 230, 230))
            if n <= _ANNOTATE_MAX and confusion[i, j] and cell >= 20:
                draw.text((x0 + 3, y0 + cell // 3), str(int(confusion[i, j])), fill="white" if rate > 0.5 else "black")
        if label_w:
            draw.text((2, top + i * cell + cell // 3), classes[i][:24], fill="black")
    draw.text((label_w, top + n * cell + 4), "columns: predicted class, rows: true class", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path
