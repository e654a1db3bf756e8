"""What the gateway, the routes and the lifecycle of one server share."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from imgcls.serve.logs import AccessLog
from imgcls.serve.metrics import Metrics
from imgcls.serve.model import ModelHolder
from imgcls.serve.settings import ServeSettings


@dataclass
class ServerState:
    """Everything the routes share; one per application."""

    settings: ServeSettings
    metrics: Metrics
    holder: ModelHolder
    predlog: Any = None
    wandb: Any = None
    watcher: Any = None
    """The ``--watch`` AliasWatcher (None without --watch): wanted vs served version in /v1/model."""
    access: AccessLog | None = None
    draining: bool = False
    inflight: int = 0
    drained: asyncio.Event | None = None
    reading: set[asyncio.Timeout] = field(default_factory=set)
    """The deadlines of the requests still reading their body (the drain's end cuts them short)."""
    bodies_cut: bool = False
    """Set when the drain ended: a request still reading its body is answered 503 ``draining``."""

    def connection_error(self, status: int, code: str) -> None:
        """An error the connection layer (:mod:`imgcls.serve.protocol`) answered before the app saw the request, or
        a connection it aborted (``write_timeout``): counted in the metrics and sent to W&B as the app's own are."""
        self.metrics.observe_connection_error(status, code)
        if self.wandb is not None:
            self.wandb.error("connection", status, code)

    def cut_reading(self) -> None:
        """End of the drain: every request still reading its body gets a JSON 503 now."""
        self.bodies_cut = True
        now = asyncio.get_running_loop().time()
        for deadline in list(self.reading):
            deadline.reschedule(now)
