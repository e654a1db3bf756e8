"""Run a check as the user ``nobody``: root reads every folder, so a test of what an unreadable folder does needs
another user. A forked child drops to that user (no interpreter need be startable by it) and sends back the
function's value, or the message of the error it raised, as JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

NOBODY = 65534


def as_nobody(fn: Callable[[], Any], errors: tuple[type[Exception], ...] = ()) -> Any:
    """``fn()``'s value (JSON-able), or the ``message`` of one of ``errors`` it raised, run as nobody when this
    process is root (as this user otherwise)."""

    def call() -> Any:
        try:
            return fn()
        except errors as exc:
            return getattr(exc, "message", str(exc))

    if os.geteuid() != 0:
        return call()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(write, json.dumps(call()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        said = f.read()
    os.waitpid(pid, 0)
    return json.loads(said) if said else "the child wrote nothing"
