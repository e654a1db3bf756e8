"""Local copies of stored versions, keyed by version digest and verified before use."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

from imgcls.paths import models_dir
from imgcls.store.backend import Progress
from imgcls.store.refs import ModelRef, parse_ref
from imgcls.store.registry import ID_LEN, Store, Version

logger = logging.getLogger(__name__)


def default_cache_dir(environ: dict[str, str] | None = None) -> Path:
    """Where pulled versions are kept: ``$IMGCLS_CACHE/models`` (:mod:`imgcls.paths`)."""
    return models_dir(environ)


def cached_path(version: Version, cache_dir: Path) -> Path:
    return cache_dir / version.name / version.digest[:ID_LEN]


def fetch(store: Store, version: Version, *, cache_dir: Path | None = None, progress: Progress | None = None) -> Path:
    """The local, verified copy of ``version``: reused from the cache when intact, pulled otherwise.

    A cached copy that fails verification is removed and pulled again.
    """
    target = cached_path(version, cache_dir or default_cache_dir())
    if target.exists():
        from imgcls.store.registry import _holds_version

        if _holds_version(target, version):
            return target
        logger.warning("cached copy %s of %s is damaged; pulling it again", target, version)
        broken = target.with_name(f".{target.name}.broken-{os.getpid()}")
        with contextlib.suppress(OSError):
            os.rename(target, broken)
        shutil.rmtree(broken, ignore_errors=True)
    return store.pull(version, target, progress=progress, provenance=True)


def resolve_ref(ref: ModelRef | str, *, cache_dir: Path | None = None) -> tuple[Path, Version]:
    """Resolve a store reference to (local verified copy, version)."""
    mref = ref if isinstance(ref, ModelRef) else parse_ref(ref)
    store = Store.open(mref.store)
    version = store.resolve(mref)
    return fetch(store, version, cache_dir=cache_dir), version
