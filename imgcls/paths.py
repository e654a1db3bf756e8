"""Where imgcls keeps things on disk: one cache root, one layout.

``$IMGCLS_CACHE`` (default ``~/.cache/imgcls``) is the root of everything imgcls writes on its own:

=====================  ===========================================  ==========================
what                   where                                        overridden by
=====================  ===========================================  ==========================
named datasets         ``$IMGCLS_CACHE/data``                       ``--data-dir``
pulled model versions  ``$IMGCLS_CACHE/models/NAME/ID``             ``cache_dir=`` (API)
prediction log         ``$IMGCLS_CACHE/serve/predictions.sqlite``   ``--log-predictions``
default model store    ``$IMGCLS_CACHE/store``                      ``$IMGCLS_STORE``, ``--to``
=====================  ===========================================  ==========================

Every function takes an optional ``environ`` so tests and ``imgcls doctor`` can ask about another environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

CACHE_ENV = "IMGCLS_CACHE"
STORE_ENV = "IMGCLS_STORE"


def cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """``$IMGCLS_CACHE``, else ``~/.cache/imgcls``."""
    env = os.environ if environ is None else environ
    raw = env.get(CACHE_ENV, "").strip()
    return Path(raw).expanduser() if raw else Path("~/.cache/imgcls").expanduser()


def data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where named datasets are looked for and downloaded."""
    return cache_root(environ) / "data"


def models_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where versions pulled from a store are kept (``NAME/ID`` below it)."""
    return cache_root(environ) / "models"


def serve_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The server's own files (the prediction log)."""
    return cache_root(environ) / "serve"


def prediction_log(environ: Mapping[str, str] | None = None) -> Path:
    """The prediction log ``imgcls serve`` writes unless given ``--log-predictions``."""
    return serve_dir(environ) / "predictions.sqlite"


def default_store(environ: Mapping[str, str] | None = None) -> str:
    """The model store used when none is named: ``$IMGCLS_STORE``, else ``$IMGCLS_CACHE/store``."""
    env = os.environ if environ is None else environ
    return env.get(STORE_ENV, "").strip() or str(cache_root(env) / "store")
