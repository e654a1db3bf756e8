"""Optional dependencies: import them lazily and say which extra to install when one is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from imgcls.errors import MissingExtraError

# module -> extra that provides it
_EXTRA_OF = {
    "torch": "train",
    "torchvision": "train",
    "timm": "train",
    "onnx": "train",
    "onnxscript": "train",
    "safetensors": "train",
    "sklearn": "train",
    "matplotlib": "train",
    "optuna": "train",
    "fastapi": "serve",
    "uvicorn": "serve",
    "multipart": "serve",
    "prometheus_client": "serve",
    "google.cloud.storage": "gcs",
    "wandb": "monitor",
    "evidently": "monitor",
    "pandas": "monitor",
    "openvino": "openvino",
}


def require(module: str, *, feature: str | None = None) -> ModuleType:
    """Import ``module`` or raise a MissingExtraError naming the extra to install.

    Example:
        torch = require("torch", feature="imgcls train")
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        root = module.split(".")[0]
        if exc.name is not None and not (exc.name == module or exc.name.startswith(root)):
            raise  # a real bug inside an installed package, not a missing extra
        extra = _EXTRA_OF.get(module, _EXTRA_OF.get(root, "all"))
        what = f"{feature} needs" if feature else "this needs"
        raise MissingExtraError(
            f"{what} the Python package '{module}', which is not installed",
            hint=f"pip install 'imgcls[{extra}]'",
        ) from exc
