"""Training: the loop, evaluation, callbacks (progress, W&B), checkpoints.

Importing this package does not import torch; :func:`fit` does.

Example:
    from imgcls.config import load_config
    from imgcls.train import fit

    result = fit(load_config("configs/digits.yaml"))
"""

from imgcls.train.callbacks import Callback, EpochEnd, FitEnd, FitResult, FitStart, StepEnd
from imgcls.train.loop import fit

__all__ = ["Callback", "EpochEnd", "FitEnd", "FitResult", "FitStart", "StepEnd", "fit"]
