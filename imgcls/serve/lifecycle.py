"""The server's lifecycle: the lifespan (load, prediction log, W&B, --watch), and the SIGTERM drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI

from imgcls.serve.logs import AccessLog
from imgcls.serve.model import ServedModel
from imgcls.serve.predlog import PredictionLog
from imgcls.serve.settings import ServeSettings
from imgcls.serve.state import ServerState

logger = logging.getLogger(__name__)


def make_lifespan(state: ServerState, on_close: Callable[[], None]) -> Callable[[FastAPI], Any]:
    """The application's lifespan: ``on_close`` runs after the model is retired (the routes' thread pools)."""
    settings, holder, metrics = state.settings, state.holder, state.metrics

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.drained = asyncio.Event()
        restore = _install_drain_handler(state)
        state.access = AccessLog() if settings.access_log else None
        watcher: Any = None
        drift_monitor: Any = None
        try:
            if holder.current is None:
                holder.install(await asyncio.to_thread(holder.loader, settings.model))
            if settings.log_predictions is not None or settings.log_export is not None:
                count_restart = metrics.track_prediction_log(lambda: bool(state.predlog and state.predlog.writer_up))
                state.predlog = await asyncio.to_thread(
                    PredictionLog,
                    settings.log_predictions,
                    export=settings.log_export,
                    export_every_s=settings.log_export_every_s,
                    on_drop=metrics.log_dropped.inc,
                    on_restart=count_restart,
                )
            if settings.wandb:
                state.wandb = await asyncio.to_thread(_start_wandb, settings, holder.current, metrics)
                if settings.wandb_drift_every_s is not None and state.predlog is not None:
                    drift_monitor = _start_drift_monitor(state)
            if settings.watch_s is not None:
                watcher = await asyncio.to_thread(_start_watcher, state, asyncio.get_running_loop())
                state.watcher = watcher
                metrics.track_alias(str(watcher.ref.alias), watcher.status)
            logger.info(
                "serving %s on %s with %s",
                holder.current.identity if holder.current else None,
                holder.current.predictor.provider if holder.current else None,
                holder.current.predictor.precision if holder.current else settings.precision,  # the one resolved
            )
            yield
        finally:
            if watcher is not None:
                watcher.stop(timeout=1.0)
            restore()
            holder.close()
            on_close()
            if drift_monitor is not None:
                await asyncio.to_thread(drift_monitor.stop)
            if state.predlog is not None:
                await asyncio.to_thread(state.predlog.close)
            if state.wandb is not None:
                await asyncio.to_thread(state.wandb.close)
            if state.access is not None:
                state.access.close()

    return lifespan


def _start_watcher(state: ServerState, loop: asyncio.AbstractEventLoop) -> Any:
    """``--watch``: follow the model's store alias; each move is pulled, verified and swapped in by the holder.

    A version that fails (download, verification, load, warm-up) is refused: the old model keeps serving, the
    watcher logs the error and ``imgcls_model_reloads_total{result="refused"}`` counts it.
    """
    from imgcls.store import AliasWatcher

    holder, metrics = state.holder, state.metrics

    def deploy(path: Any) -> None:
        holder.swap_threadsafe(loop, str(path))
        metrics.reloads.labels("ok").inc()

    def refused(_version: Any, _exc: BaseException) -> None:
        metrics.reloads.labels("refused").inc()

    assert state.settings.watch_s is not None
    current = holder.current.sha256 if holder.current is not None else None
    watcher = AliasWatcher(
        state.settings.model, state.settings.watch_s, deploy, on_refused=refused, current_digest=current
    )
    return watcher.start()


def _start_wandb(settings: ServeSettings, served: ServedModel | None, metrics: Any) -> Any:
    from imgcls.serve.wandb_logger import WandbLogger
    from imgcls.wandb_run import resolve_mode

    classes = list(served.predictor.classes) if served else []
    logger_ = WandbLogger(
        project=settings.wandb_project,
        mode=resolve_mode(requested=settings.wandb_mode),
        classes=classes,
        config={
            "max_batch": settings.max_batch,
            "max_delay_ms": settings.max_delay_ms,
            "precision": settings.precision,
            "engine": served.predictor.engine.name if served else None,
            "provider": served.predictor.provider if served else None,
            "workers": settings.workers,
            "log_every_s": settings.wandb_every_s,
            "drift_every_s": settings.wandb_drift_every_s,
        },
        model=model_event(served) if served else None,
        flush_s=settings.wandb_every_s,
        on_drop=metrics.wandb_dropped.inc,
    )
    logger_.start()
    return logger_


def model_event(served: ServedModel) -> Any:
    """What the W&B run records about a served model (its artifact is looked up by the W&B thread)."""
    from imgcls.serve.wandb_logger import ModelEvent

    return ModelEvent(identity={**served.identity, "ref": served.ref}, bundle_dir=str(served.bundle.path))


def _start_drift_monitor(state: ServerState) -> Any:
    """``--wandb-drift-every``: the prediction log's drift, checked in another process, to the W&B run."""
    from imgcls.serve.wandb_drift import DriftMonitor

    settings, holder, metrics = state.settings, state.holder, state.metrics
    assert settings.wandb_drift_every_s is not None and settings.log_predictions is not None

    def current() -> tuple[str, str] | None:
        served = holder.current
        return (str(served.bundle.path), served.sha256) if served is not None else None

    return DriftMonitor(
        every_s=settings.wandb_drift_every_s,
        log_path=settings.log_predictions,
        current=current,
        sink=state.wandb.drift,
        on_result=lambda result: metrics.wandb_drift_checks.labels(result).inc(),
    ).start()


# --- SIGTERM: drain, then let uvicorn exit -----------------------------------------------------------------


def _install_drain_handler(state: ServerState) -> Callable[[], None]:
    """On SIGTERM/SIGINT: readyz 503, refuse new work, wait for in-flight requests (≤ drain_s), then exit.

    uvicorn installs its own handlers before the lifespan starts; this one wraps them and calls uvicorn's
    once the drain is over (a second signal exits at once). Only in the main thread (not under TestClient).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def chain(sig: int) -> None:
        handler = previous.get(sig)
        if callable(handler):
            handler(sig, None)
        elif sig == signal.SIGINT:
            raise KeyboardInterrupt

    def handle(sig: int, _frame: Any) -> None:
        if state.draining:  # second signal: stop waiting
            chain(sig)
            return
        state.draining = True
        logger.info(
            "signal %s: draining %d in-flight request(s), at most %.1f s", sig, state.inflight, state.settings.drain_s
        )
        loop.call_soon_threadsafe(lambda: loop.create_task(_drain_then_exit(state, lambda: chain(sig))))

    for sig in previous:
        signal.signal(sig, handle)

    def restore() -> None:
        for sig, handler in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)

    return restore


async def _drain_then_exit(state: ServerState, exit_now: Callable[[], None]) -> None:
    started = time.monotonic()
    if state.inflight > 0 and state.drained is not None:
        state.drained.clear()
        if state.inflight > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(state.drained.wait(), timeout=state.settings.drain_s)
    if state.reading:  # still sending their body: a JSON 503 now, not uvicorn's plain-text 500 later
        state.cut_reading()
        await asyncio.sleep(0.05)  # let them answer before uvicorn closes the connections
    left = state.inflight
    logger.info(
        "drained in %.2f s%s", time.monotonic() - started, f" ({left} request(s) still running)" if left else ""
    )
    exit_now()
