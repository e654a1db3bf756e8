"""The model store: versioned bundles in a local folder or a GCS bucket, and references to them.

Every place that takes a model (``predict --model``, ``serve --model``, the admin reload) calls
:func:`resolve_model`: a bundle directory is returned as it is; a store reference (``URI/NAME@ALIAS``,
``URI/NAME:VERSION``, ``NAME@ALIAS`` in the default store, ``file://…``, ``gs://…``) is resolved, pulled into the
local cache keyed by version, verified, and that directory returned. Resolving a local directory imports nothing
heavy; google-cloud-storage is imported only for ``gs://`` references.
"""

from __future__ import annotations

from pathlib import Path

from imgcls.store.refs import ModelRef, StoreURI, default_store_uri, looks_like_ref, parse_ref, parse_store_uri
from imgcls.store.registry import Alias, AliasMove, PushResult, Store, Version, provenance
from imgcls.store.watcher import AliasWatcher


def is_store_ref(ref: str | Path) -> bool:
    """True if ``ref`` names a store version rather than a bundle directory on disk."""
    if (Path(str(ref)) / "bundle.json").is_file():
        return False
    return looks_like_ref(ref)


def resolve_model(ref: str | Path, *, cache_dir: Path | None = None) -> Path:
    """The local bundle directory for a ``--model`` argument.

    Args:
        ref: A bundle directory, or a store reference (``gs://bucket/models/digits@production``,
            ``/srv/store/digits:3``, ``file:///srv/store/digits@latest``, ``digits@production`` in the default
            store ``$IMGCLS_STORE``).
        cache_dir: Where pulled versions are kept (default ``$IMGCLS_CACHE/models``, see :mod:`imgcls.paths`).

    Returns:
        A directory holding the bundle. Store versions are verified (every sha256) before it is returned;
        a plain directory is only checked to be a bundle (its loader verifies it).

    Raises:
        BundleError: not a bundle directory. StoreError / UsageError: a bad or unresolvable reference, or a
        stored version that fails verification (nothing is left behind).

    Example:
        bundle_dir = resolve_model("gs://my-bucket/models/digits@production")
    """
    if not is_store_ref(ref):
        from imgcls.bundle import read_manifest

        read_manifest(Path(ref))
        return Path(ref)
    from imgcls.store.cache import resolve_ref

    return resolve_ref(str(ref), cache_dir=cache_dir)[0]


def resolve_model_version(ref: str | Path, *, cache_dir: Path | None = None) -> tuple[Path, Version | None]:
    """Like :func:`resolve_model`, also returning the store Version (None for a plain bundle directory)."""
    if not is_store_ref(ref):
        return resolve_model(ref, cache_dir=cache_dir), None
    from imgcls.store.cache import resolve_ref

    return resolve_ref(str(ref), cache_dir=cache_dir)


__all__ = [
    "Alias",
    "AliasMove",
    "AliasWatcher",
    "ModelRef",
    "PushResult",
    "Store",
    "StoreURI",
    "Version",
    "default_store_uri",
    "is_store_ref",
    "parse_ref",
    "parse_store_uri",
    "provenance",
    "resolve_model",
    "resolve_model_version",
]
