"""A whitening first layer (airbench): the stem convolution starts as a filter bank that decorrelates patches.

The covariance of the training images' normalised ``k×k×C`` patches is eigen-decomposed; each eigenvector,
scaled by ``1/sqrt(eigenvalue + eps)``, becomes a filter, and its negation a second one (so a following ReLU
keeps both signs). The first convolution then outputs whitened patch coordinates from step 0, which is what lets
airbench-style schedules train in a few epochs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from imgcls.bundle import InputSpec
from imgcls.data.transform import normalize

_MAX_IMAGES = 5000
_MAX_PATCHES = 200_000


def first_conv(model: Any) -> Any:
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            return module
    return None


def whiten_first_conv(model: Any, images: np.ndarray, spec: InputSpec, *, eps: float = 5e-4, seed: int = 0) -> int:
    """Set the first convolution's filters from uint8 ``(N, H, W, C)`` training ``images``; returns how many.

    Filters beyond twice the patch dimension keep their random initialisation; a grouped or dilated first
    convolution is left alone (returns 0).
    """
    import torch
    import torch.nn.functional as F

    conv = first_conv(model)
    if conv is None or conv.groups != 1 or tuple(conv.dilation) != (1, 1):
        return 0
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(images), min(len(images), _MAX_IMAGES), replace=False))
    x = torch.from_numpy(normalize(images[pick], spec)).double()
    kh, kw = conv.kernel_size
    patches = F.unfold(x, (kh, kw)).transpose(1, 2).reshape(-1, x.shape[1] * kh * kw)
    if patches.shape[0] > _MAX_PATCHES:
        rows = torch.from_numpy(rng.choice(patches.shape[0], _MAX_PATCHES, replace=False))
        patches = patches[rows]
    patches = patches - patches.mean(0, keepdim=True)
    cov = patches.T @ patches / patches.shape[0]
    eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
    filters = (eigvecs.T / torch.sqrt(eigvals.clamp_min(0) + eps)[:, None]).flip(0)  # largest variance first
    bank = torch.cat([filters, -filters])
    count = min(conv.out_channels, bank.shape[0])
    with torch.no_grad():
        w = bank[:count].view(count, conv.in_channels, kh, kw).to(conv.weight.dtype, copy=True)
        conv.weight[:count] = w.to(conv.weight.device).contiguous(memory_format=torch.contiguous_format)
        if conv.bias is not None:
            conv.bias[:count] = 0
    return count
