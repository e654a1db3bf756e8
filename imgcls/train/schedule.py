"""What depends only on the step or the epoch: the learning-rate multiplier and the epoch's random generator."""

from __future__ import annotations

import math
from typing import Any


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Learning-rate multiplier for ``step`` (0-based): linear warm-up, then one-cycle / cosine / constant.

    ``onecycle`` decays linearly to 0 after the warm-up (a triangular cycle); ``cosine`` follows half a cosine.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)


def epoch_generator(seed: int, epoch: int) -> Any:
    """The data order and augmentation of an epoch depend only on (seed, epoch): resume replays them exactly."""
    import torch

    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7919) % 2**63)
