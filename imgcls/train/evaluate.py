"""Evaluation with THE eval transform: uint8 prepared images -> :func:`imgcls.data.transform.normalize` -> model.

Because the normalisation is the same numpy function predict and serve use, the accuracy reported here is the
accuracy a user gets from the deployed model on the same images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from imgcls.bundle import InputSpec
from imgcls.data.transform import normalize


@dataclass
class Evaluation:
    """Scores of one model on one split."""

    top1: float  # fraction 0..1
    top5: float  # top-k with k = min(5, classes)
    loss: float  # mean cross-entropy (no label smoothing)
    per_class: np.ndarray  # float64 (classes,): accuracy per true class (NaN for a class with no images)
    confusion: np.ndarray  # int64 (classes, classes): rows = true class, columns = predicted class
    predictions: np.ndarray  # int64 (N,)
    confidences: np.ndarray  # float32 (N,): softmax probability of the predicted class
    labels: np.ndarray  # int64 (N,): the true classes
    count: int

    def per_class_dict(self, classes: list[str]) -> dict[str, float | None]:
        return {c: (None if np.isnan(a) else float(a)) for c, a in zip(classes, self.per_class, strict=True)}

    def to_dict(self, classes: list[str]) -> dict[str, Any]:
        return {
            "top1": self.top1,
            "top5": self.top5,
            "loss": round(self.loss, 6),
            "images": self.count,
            "per_class_top1": self.per_class_dict(classes),
            "confusion_matrix": self.confusion.tolist(),
        }


def predict_logits(
    model: Any,
    images: np.ndarray,
    spec: InputSpec,
    *,
    batch_size: int = 512,
    device: str = "cpu",
    channels_last: bool = False,
    autocast_bf16: bool = False,
    flip_tta: bool = False,
) -> np.ndarray:
    """Logits ``float32`` ``(N, classes)`` for uint8 ``(N, H, W, C)`` prepared images (model in eval mode).

    ``flip_tta`` averages the logits of each image and its mirror image (test-time augmentation).
    """
    import torch

    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                x = torch.from_numpy(normalize(images[i : i + batch_size], spec)).to(device, non_blocking=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=autocast_bf16):
                    logits = model(x).float()
                    if flip_tta:
                        logits = (logits + model(x.flip(3)).float()) / 2
                out.append(logits.cpu().numpy())
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


def score(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> Evaluation:
    """Top-1/top-5, loss, per-class accuracy and confusion matrix from logits and true labels."""
    labels = np.asarray(labels, dtype=np.int64)
    n = int(labels.shape[0])
    if n == 0:
        nan = float("nan")
        return Evaluation(
            nan,
            nan,
            nan,
            np.full(num_classes, np.nan),
            np.zeros((num_classes,) * 2, np.int64),
            np.zeros(0, np.int64),
            np.zeros(0, np.float32),
            labels,
            0,
        )
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    predictions = logits.argmax(axis=1).astype(np.int64)
    k = min(5, num_classes)
    topk = np.argpartition(-logits, k - 1, axis=1)[:, :k] if k < num_classes else np.arange(num_classes)[None]
    top5 = float(np.mean(np.any(topk == labels[:, None], axis=1)))
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan)
    return Evaluation(
        top1=float(np.mean(predictions == labels)),
        top5=top5,
        loss=float(-log_probs[np.arange(n), labels].mean()),
        per_class=per_class,
        confusion=confusion,
        predictions=predictions,
        confidences=np.exp(log_probs[np.arange(n), predictions]).astype(np.float32),
        labels=labels,
        count=n,
    )


def evaluate(
    model: Any,
    images: np.ndarray,
    labels: np.ndarray,
    spec: InputSpec,
    *,
    num_classes: int,
    batch_size: int = 512,
    device: str = "cpu",
    channels_last: bool = False,
    autocast_bf16: bool = False,
    dist: Any = None,
    flip_tta: bool = False,
) -> Evaluation:
    """Score ``model`` on uint8 prepared ``images`` with the eval transform.

    With ``dist`` (a :class:`~imgcls.train.distributed.DistEnv` of several processes) each rank computes the
    logits of its shard (every ``world_size``-th image, no padding) and every rank scores all of them: the
    result is the single-process evaluation of the same weights.

    Example:
        model = load_model("runs/digits")
        ev = evaluate(model, ds.test.images, ds.test.labels, bundle.input, num_classes=10)
        ev.top1  # == bundle.metrics.test_top1
    """
    kw: dict[str, Any] = {
        "batch_size": batch_size,
        "device": device,
        "channels_last": channels_last,
        "autocast_bf16": autocast_bf16,
        "flip_tta": flip_tta,
    }
    if dist is None or not dist.enabled:
        return score(predict_logits(model, images, spec, **kw), labels, num_classes)
    import torch

    from imgcls.train.distributed import gather_rows, shard

    n = len(images)
    mine = np.asarray(shard(n, dist), dtype=np.int64)
    local = predict_logits(model, images[mine], spec, **kw) if len(mine) else np.zeros((0, num_classes), np.float32)
    comm_device = device if str(device).startswith("cuda") else "cpu"
    rows = gather_rows(dist, torch.from_numpy(local.reshape(len(mine), num_classes)).to(comm_device), n)
    return score(rows.cpu().numpy(), labels, num_classes)
