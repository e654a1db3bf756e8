"""The bundle format version and the migrations that bring an older manifest up to the current schema.

``format`` is ``imgcls.bundle/MAJOR.MINOR`` (``imgcls.bundle/1`` means 1.0). A minor version only adds
optional keys or sections, so a reader of 1.N reads 1.M for any M: an older minor is migrated in memory by
the functions in :data:`MIGRATIONS` (the file on disk is never rewritten, so its sha256 -- the bundle's
identity in a store -- does not change), a newer minor loads with a warning (its extra keys are kept), and
another major is refused with a hint.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imgcls.errors import BundleError

logger = logging.getLogger("imgcls.bundle")

PREFIX = "imgcls.bundle/"
MAJOR = 1
MINOR = 1
FORMAT = f"{PREFIX}{MAJOR}.{MINOR}"

_VERSION = re.compile(r"^imgcls\.bundle/(\d+)(?:\.(\d+))?$")


def parse_format(fmt: object) -> tuple[int, int] | None:
    """``(major, minor)`` of a format string, None when it is not an imgcls bundle format."""
    m = _VERSION.match(fmt) if isinstance(fmt, str) else None
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


def _v1_0_to_v1_1(meta: dict[str, Any]) -> dict[str, Any]:
    """1.0 stored the final evaluation under ``test_*`` even when it ran on the validation split."""
    metrics = meta.get("metrics")
    if isinstance(metrics, dict) and metrics.get("eval_split") not in (None, "test"):
        split = str(metrics["eval_split"])
        moved = {k: metrics.pop(f"test_{k}") for k in ("top1", "top5", "loss") if f"test_{k}" in metrics}
        for k, v in moved.items():
            metrics.setdefault(f"{split}_{k}", v)
    return meta


# (major, minor) it applies to -> function returning the manifest at (major, minor + 1)
MIGRATIONS: dict[tuple[int, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    (1, 0): _v1_0_to_v1_1,
}


_WARNED: set[tuple[str, str]] = set()


def _warned_once(where: object, fmt: object) -> bool:
    """True when this process already warned about ``where`` at ``fmt`` (predict, export and serve read a
    manifest more than once: the warning was printed two or three times, under two spellings of the path)."""
    if not isinstance(where, os.PathLike):
        return False  # a manifest read from memory (a store's stored version): no file to know it by
    path = Path(where)
    key = (os.path.realpath(path.parent if path.name == "bundle.json" else path), str(fmt))
    if key in _WARNED:
        return True
    _WARNED.add(key)
    return False


def migrate(meta: dict[str, Any], *, where: object) -> dict[str, Any]:
    """Bring a parsed manifest to the current version (in memory); BundleError for another major version."""
    fmt = meta.get("format")
    version = parse_format(fmt)
    if version is None or version[0] != MAJOR:
        hint = (
            "this bundle was written by a newer imgcls: upgrade imgcls (`pip install -U imgcls`)"
            if version is not None and version[0] > MAJOR
            else "re-create the bundle with this version of imgcls (`imgcls train`)"
        )
        raise BundleError(f"{where} has unknown bundle format {fmt!r} (this imgcls reads {FORMAT!r})", hint=hint)
    major, minor = version
    if minor > MINOR:
        if _warned_once(where, fmt):
            return meta
        logger.warning(
            "%s has bundle format %s, newer than this imgcls (%s): loading it, keys this version does not know "
            "are kept but not used; upgrade imgcls to use them",
            where,
            fmt,
            FORMAT,
        )
        return meta
    while minor < MINOR:
        meta = MIGRATIONS[(major, minor)](meta)
        minor += 1
    meta["format"] = FORMAT
    return meta
