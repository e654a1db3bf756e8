"""Continuous delivery of models: poll an alias, and hand each new verified version to a callback.

``imgcls serve --model gs://bucket/models/digits@production --watch 30`` runs an :class:`AliasWatcher` whose
callback is the server's atomic model swap: promoting an alias (``imgcls models alias …``) deploys a model.
A version that fails to pull, verify or load is refused: the callback is not called (or raised), the old model
keeps serving, the failure is logged and counted, and the same version is not retried until the alias moves
again. Errors while polling (network, credentials) are logged and retried at the next tick.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgcls.errors import ConflictError, StoreError, UsageError
from imgcls.store.cache import fetch
from imgcls.store.refs import ModelRef, looks_like_ref, parse_ref
from imgcls.store.registry import Store, Version

logger = logging.getLogger(__name__)


@dataclass
class WatchStats:
    """Counters a server exports as metrics."""

    polls: int = 0
    poll_errors: int = 0
    deployed: int = 0
    refused: int = 0


def check_watch_ref(ref: str | Path | ModelRef, interval: float) -> ModelRef:
    """The parsed reference ``--watch`` can follow: a store reference with an alias, and a positive interval.

    Raises:
        UsageError: a bundle directory, a pinned ``:VERSION``, or an interval <= 0.
    """
    if not isinstance(ref, ModelRef) and ((Path(str(ref)) / "bundle.json").is_file() or not looks_like_ref(ref)):
        raise UsageError(
            f"--watch follows a store alias, and {ref} is a bundle directory",
            hint="serve a store reference, e.g. --model gs://BUCKET/PREFIX/NAME@production --watch 30",
        )
    parsed = ref if isinstance(ref, ModelRef) else parse_ref(ref)
    if parsed.alias is None:
        raise UsageError(
            f"--watch needs an alias to follow, and {parsed} pins a version",
            hint=f"use {str(parsed.store).rstrip('/')}/{parsed.name}@production (or another alias)",
        )
    if not interval > 0:
        raise UsageError(f"--watch interval must be positive, got {interval}", hint="e.g. --watch 30")
    return parsed


class AliasWatcher:
    """Poll ``ref``'s alias every ``interval`` seconds in a daemon thread; call ``on_change(path)`` on a move.

    Args:
        ref: A store reference with an alias (``URI/NAME@ALIAS``; ``URI/NAME`` means ``@latest``).
        interval: Seconds between polls.
        on_change: Gets the local verified directory of the new version; raising refuses the version.
        on_refused: Optional; called with ``(version, error)`` when a version is refused (metrics).
        current_digest: Digest of the bundle already serving (no callback until the alias points at another
            version); by default the version the alias points at when the watcher starts.
        cache_dir: Where versions are pulled (default: the store cache).

    Example:
        watcher = AliasWatcher("gs://b/models/digits@production", 30, lambda p: holder.swap_threadsafe(loop, str(p)))
        watcher.start()
    """

    def __init__(
        self,
        ref: str | ModelRef,
        interval: float,
        on_change: Callable[[Path], None],
        *,
        on_refused: Callable[[Version, BaseException], None] | None = None,
        current_digest: str | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.ref = check_watch_ref(ref, interval)
        self.interval = float(interval)
        self.on_change = on_change
        self.on_refused = on_refused
        self.cache_dir = cache_dir
        self.store = Store.open(self.ref.store)
        self.current: Version | None = None
        self.current_digest = current_digest
        self.refused: Version | None = None
        self.refused_error: str | None = None
        self.wanted: Version | None = None
        """The version the alias pointed at when last resolved: what should be serving."""
        self.stats = WatchStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> AliasWatcher:
        try:
            target = self.store.resolve(self.ref)
            self.wanted = target
            if self.current_digest is None or self.current_digest == target.digest:
                self.current, self.current_digest = target, target.digest
            else:  # serving another version of the same model (e.g. started from a pinned one): which?
                self.current = next(
                    (v for v in self.store.versions(target.name) if v.digest == self.current_digest), None
                )
        except StoreError as exc:
            logger.warning("watching %s: cannot resolve it yet (%s); will retry", self.ref, exc.message)
        self._thread = threading.Thread(target=self._run, name=f"imgcls-watch-{self.ref.name}", daemon=True)
        self._thread.start()
        logger.info("watching %s every %g s (serving %s)", self.ref, self.interval, self.serving)
        return self

    @property
    def serving(self) -> str:
        """What is serving, for log lines."""
        if self.current is not None:
            return str(self.current)
        return f"digest {self.current_digest[:12]}" if self.current_digest else "nothing"

    def status(self, *, full: bool = True) -> dict[str, Any]:
        """Wanted (the alias) vs served version, for ``/v1/model`` and the metrics an alert watches.

        ``in_sync`` is False while the alias points at a version this server refused (or has not loaded yet);
        ``refused`` then says which and why (in words that name no folder of this machine). ``full`` False is the
        view for anyone (``GET /v1/model`` without the admin token): without ``ref``, the server-side reference
        (a local store is a path on the server's disk).
        """

        def brief(v: Version | None) -> dict[str, Any] | None:
            return None if v is None else {"version": v.seq, "digest": v.digest}

        served = brief(self.current) or (
            {"version": None, "digest": self.current_digest} if self.current_digest else None
        )
        wanted = brief(self.wanted)
        refused = None
        if self.refused is not None and self.wanted is not None and self.refused.digest == self.wanted.digest:
            refused = {**(brief(self.refused) or {}), "error": self.refused_error}
        return {
            **({"ref": str(self.ref)} if full else {}),
            "alias": self.ref.alias,
            "wanted": wanted,
            "served": served,
            "in_sync": wanted is not None and served is not None and wanted["digest"] == served["digest"],
            "refused": refused,
        }

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> AliasWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _without_local_paths(self, message: str, version: Version, pulled: Path | None) -> str:
        """``message`` with the folders of this machine it names (the pulled copy, the model cache, a local
        store's root) replaced by what they are: the server's log has the paths, a caller gets none."""
        from imgcls.store.cache import default_cache_dir

        cache = Path(self.cache_dir or default_cache_dir())
        places: dict[str, str] = {}
        if pulled is not None:
            places[str(pulled)] = f"{version}"
        places[str(cache)] = "the model cache"
        if self.store.uri.scheme == "file":
            places[str(self.store.uri.path)] = "the store"
        for local, word in list(places.items()):
            with contextlib.suppress(OSError):
                places.setdefault(os.path.realpath(local), word)
        for local in sorted(places, key=len, reverse=True):  # the pulled copy lies inside the cache
            message = message.replace(local, places[local])
        return message

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> Version | None:
        """One check: returns the version deployed by this poll, or None. Never raises."""
        self.stats.polls += 1
        try:
            target = self.store.resolve(self.ref)
        except Exception as exc:  # network, credentials, a hand-edited alias: try again next tick
            self.stats.poll_errors += 1
            logger.warning("watching %s: poll failed: %s", self.ref, getattr(exc, "message", exc))
            return None
        self.wanted = target
        if target.digest == self.current_digest:
            return None
        if self.refused is not None and target.digest == self.refused.digest:
            return None  # already refused; wait for the alias to move again
        path: Path | None = None
        try:
            path = fetch(self.store, target, cache_dir=self.cache_dir)
            self.on_change(path)
        except ConflictError as exc:  # e.g. an admin reload is running: not the version's fault, retry later
            logger.info("watching %s: %s; retrying at the next poll", self.ref, exc.message)
            return None
        except Exception as exc:
            self.refused = target
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            self.refused_error = self._without_local_paths(message, target, path)  # status() shows it to anyone
            self.stats.refused += 1
            logger.error(
                "watching %s: refused version %s; still serving %s: %s",
                self.ref,
                target,
                self.serving,
                getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}",
            )
            if self.on_refused is not None:
                try:
                    self.on_refused(target, exc)
                except Exception:
                    logger.exception("on_refused callback failed")
            return None
        logger.info("watching %s: deployed %s (was %s)", self.ref, target, self.serving)
        self.current, self.current_digest = target, target.digest
        self.refused, self.refused_error = None, None
        self.stats.deployed += 1
        return target
