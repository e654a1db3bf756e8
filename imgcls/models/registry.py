"""A decorator registers a builder under its function name; ``create_model`` builds imgcls' own networks or
any timm model, sets classes and input channels, and adapts the stem for small inputs (≤ 64 px)."""

from __future__ import annotations

import difflib
import logging
from typing import Any

from imgcls.deps import require
from imgcls.errors import ConfigError, UsageError
from imgcls.models._registry import _REGISTRY, register_model

logger = logging.getLogger(__name__)

SMALL_INPUT_MAX = 64

# register_model lives in the leaf module _registry (model modules import it from there: no cycle)
__all__ = ["SMALL_INPUT_MAX", "check_model_name", "create_model", "is_registered", "list_models", "model_from_spec"]
__all__ += ["model_spec", "register_model"]


def _ensure_builtin() -> None:
    import imgcls.models.small  # noqa: F401  (registers resnet8 & co.)


def is_registered(name: str) -> bool:
    _ensure_builtin()
    return name in _REGISTRY


def list_models(pattern: str | None = None) -> list[str]:
    """imgcls' own networks followed by timm's (filtered by an fnmatch ``pattern``)."""
    import fnmatch

    _ensure_builtin()
    timm = require("timm", feature="listing models")
    own = sorted(n for n in _REGISTRY if pattern is None or fnmatch.fnmatch(n, pattern))
    return own + list(timm.list_models(pattern or "*"))


def _unknown(name: str) -> ConfigError:
    import timm

    candidates = list(_REGISTRY) + list(timm.list_models())
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    return ConfigError(
        f"unknown model {name!r}" + (f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""),
        hint="use an imgcls model (resnet8, resnet8_wide) or any timm name (resnet18, efficientnet_b0, ...)",
    )


def check_model_name(name: str, *, pretrained: bool = False) -> None:
    """ConfigError naming close names for a model neither imgcls nor timm has, or pretrained weights for one of
    imgcls' own networks (which have none). Cheap: nothing is built, timm is imported only for a timm name."""
    _ensure_builtin()
    if name in _REGISTRY:
        if pretrained:
            raise ConfigError(f"model {name!r} has no pretrained weights", hint="drop --pretrained")
        return
    timm = require("timm", feature="timm models")
    if not timm.is_model(name):
        raise _unknown(name)


def adapt_small_input_stem(model: Any) -> bool:
    """3×3 stride-1 first conv and no max-pool, as CIFAR ResNets do (timm has no such option).

    Returns True when the stem was changed.
    """
    import torch.nn as nn

    changed = False
    if hasattr(model, "maxpool") and not isinstance(model.maxpool, nn.Identity):
        model.maxpool = nn.Identity()
        changed = True
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                stride = child.stride[0] if isinstance(child.stride, tuple) else child.stride
                if stride == 1 and child.kernel_size[0] <= 3:
                    return changed  # the stem is already small-input friendly
                kernel = 3 if child.kernel_size[0] > 3 else child.kernel_size[0]
                new = nn.Conv2d(
                    child.in_channels,
                    child.out_channels,
                    kernel,
                    stride=1,
                    padding=kernel // 2,
                    bias=child.bias is not None,
                )
                setattr(parent, child_name, new)
                return True
    return changed


def create_model(
    name: str,
    *,
    num_classes: int,
    in_chans: int = 3,
    img_size: int | None = None,
    pretrained: bool = False,
    small_input_stem: bool | None = None,
    **kwargs: Any,
) -> Any:
    """Build a model by name. ``None`` kwargs are dropped so each model keeps its own defaults."""
    require("torch", feature="building a model")
    _ensure_builtin()
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    check_model_name(name, pretrained=pretrained)
    if name in _REGISTRY:
        return _REGISTRY[name](num_classes=num_classes, in_chans=in_chans, **kwargs)
    timm = require("timm", feature="timm models")
    kwargs.pop("width", None)
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except RuntimeError as exc:
        if pretrained and ("download" in str(exc).lower() or "connect" in str(exc).lower() or "hub" in str(exc)):
            raise _offline(name, exc) from None
        raise
    except OSError as exc:  # huggingface_hub / urllib connection errors subclass OSError
        if pretrained:
            raise _offline(name, exc) from None
        raise
    if small_input_stem is None:
        small_input_stem = img_size is not None and img_size <= SMALL_INPUT_MAX
    if small_input_stem:
        adapt_small_input_stem(model)
    return model


def _offline(name: str, exc: BaseException) -> UsageError:
    return UsageError(
        f"cannot download pretrained weights for {name!r}: {type(exc).__name__}: {str(exc)[:200]}",
        hint="connect to the internet (or pre-fill the Hugging Face cache, HF_HOME), or train without --pretrained",
    )


def model_spec(
    name: str,
    *,
    num_classes: int,
    in_chans: int,
    img_size: int,
    small_input_stem: bool | None,
    **kwargs: Any,
) -> dict[str, Any]:
    """The bundle's ``model`` section: everything needed to rebuild the architecture."""
    _ensure_builtin()
    if small_input_stem is None and name not in _REGISTRY:
        small_input_stem = img_size <= SMALL_INPUT_MAX
    return {
        "arch": name,
        "source": "imgcls" if name in _REGISTRY else "timm",
        "num_classes": num_classes,
        "in_chans": in_chans,
        "img_size": img_size,
        "small_input_stem": bool(small_input_stem) if name not in _REGISTRY else False,
        "kwargs": {k: v for k, v in kwargs.items() if v is not None},
    }


def model_from_spec(spec: dict[str, Any]) -> Any:
    """Rebuild an (untrained) model from a bundle's ``model`` section."""
    return create_model(
        spec["arch"],
        num_classes=int(spec["num_classes"]),
        in_chans=int(spec["in_chans"]),
        img_size=int(spec["img_size"]),
        small_input_stem=bool(spec.get("small_input_stem", False)),
        pretrained=False,
        **dict(spec.get("kwargs", {})),
    )
