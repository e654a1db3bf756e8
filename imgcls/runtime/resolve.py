"""``--model`` arguments -> local bundle directories (store references are pulled and verified)."""

from __future__ import annotations

from pathlib import Path


def resolve_model(ref: str | Path) -> Path:
    """The local bundle directory for a ``--model`` argument: a bundle directory, or a model-store reference.

    Store references (``file://…``, ``gs://…``, ``NAME@ALIAS``, ``NAME:VERSION``) are resolved, pulled and
    verified by :func:`imgcls.store.resolve_model`; without the store package, only directories work.
    """
    try:
        from imgcls.store import resolve_model as store_resolve
    except ModuleNotFoundError as exc:
        if exc.name != "imgcls.store":
            raise
        return Path(ref)
    return Path(store_resolve(ref))
