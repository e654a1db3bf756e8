"""The model registry itself: builder name -> builder (a leaf module, as timm's ``_registry.py``).

Model modules (:mod:`imgcls.models.small`) register their builders here with :func:`register_model`;
the factory (:mod:`imgcls.models.registry`) imports those modules and reads the registry. No model module
imports the factory, so the two never import each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register a builder ``fn(num_classes, in_chans, **kwargs) -> nn.Module`` under ``fn.__name__``."""
    _REGISTRY[fn.__name__] = fn
    return fn
