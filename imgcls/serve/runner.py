"""Run the server on uvicorn: one process (the app built here, model loaded first) or ``--workers N``.

Shutdown: SIGTERM/SIGINT start the drain of :func:`imgcls.serve.lifecycle._install_drain_handler` (``/readyz`` 503,
new work refused with 503, in-flight requests finish, at most ``drain_s``; a request still sending its body
then gets a JSON 503); then uvicorn closes the
connections (at most ``GRACE_AFTER_DRAIN_S`` more) and the lifespan flushes the prediction log.
With workers, uvicorn's supervisor forwards SIGTERM to every worker and each one drains the same way.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from typing import Any

import uvicorn

from imgcls.errors import UsageError
from imgcls.serve.settings import SETTINGS_ENV, ServeSettings, settings_to_env

logger = logging.getLogger(__name__)

GRACE_AFTER_DRAIN_S = 1.0


def check_environment(settings: ServeSettings) -> None:
    """Refuse to start on what would fail later: an address that cannot be bound, W&B without a key, an unwritable
    prediction log.

    Raises:
        UsageError: with a hint naming the fix.
    """
    check_address(settings.host, settings.port)
    ensure_file_limit(settings.max_connections)
    if settings.wandb:
        from imgcls.wandb_run import resolve_mode

        resolve_mode(requested=settings.wandb_mode)
    if settings.log_predictions is not None:
        from imgcls.serve.predlog import connect

        try:
            connect(settings.log_predictions).close()
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(
                f"--log-predictions {settings.log_predictions}: cannot open the SQLite log ({exc})",
                hint="pass a writable path, or --log-predictions off",
            ) from None
    if settings.log_export is not None:
        from imgcls.serve.logexport import check_export_uri

        check_export_uri(settings.log_export)
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("binding %s: the server is reachable from other machines", settings.host)


# The descriptors a server holds beside its connections: the listening socket, the model file, logs, the SQLite
# prediction log (and its WAL), the pipes of its writer and drift monitor, thread pools', onnxruntime's; and the
# connection beyond the cap that is accepted to be answered 503.
FD_RESERVE = 64


def ensure_file_limit(max_connections: int) -> None:
    """Raise the soft open-file limit (``ulimit -n``) to what ``max_connections`` needs, as far as the hard limit
    allows (workers inherit it); warn when it cannot: past the limit, a new client's connection is reset by the
    kernel (the accept fails), not answered the JSON 503 that ``--max-connections`` promises, and nothing counts it.
    systemd's default soft limit is 1,024 against a hard one of 524,288; the default cap is 1,000 connections."""
    try:
        import resource
    except ImportError:  # not on a POSIX system: no such limit to raise
        return
    need = max_connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.debug("cannot raise the open-file limit to %d: %s", target, exc)
    if soft != resource.RLIM_INFINITY and soft < need:
        logger.warning(
            "the open-file limit (ulimit -n) is %d, too few for --max-connections %d: past about %d connections, "
            "new clients are reset, not answered 503; raise the limit (ulimit -Hn, LimitNOFILE= in systemd, "
            "--ulimit nofile= in docker) or pass --max-connections %d",
            soft,
            max_connections,
            max(soft - FD_RESERVE, 1),
            max(soft - FD_RESERVE, 1),
        )


def check_address(host: str, port: int) -> None:
    """UsageError unless ``host:port`` can be bound now, before the model loads: every address the name resolves to,
    as asyncio's ``create_server`` binds them for uvicorn (SO_REUSEADDR, IPv6 only on IPv6). uvicorn said a port in
    use or an unknown host only in a JSON log line, and exited with status 3. (Another process may still take the
    port before uvicorn binds it; then uvicorn's own error stands.)"""
    import socket

    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise UsageError(
            f"--host {host!r} is not a name or address this machine can resolve",
            hint="e.g. --host 127.0.0.1 (this machine only) or --host 0.0.0.0 (every interface)",
        ) from None
    for family, kind, proto, _, address in dict.fromkeys(found):
        _try_bind(host, port, family, kind, proto, address)


def _try_bind(host: str, port: int, family: int, kind: int, proto: int, address: Any) -> None:
    import socket

    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(
                    f"port {port} on {host} is in use: another server listens there",
                    hint=f"choose another --port, or stop that server (`ss -ltnp 'sport = :{port}'` names it)",
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise UsageError(
                    f"--host {host} is not an address of this machine",
                    hint="use one of its addresses (`ip -brief address`), 127.0.0.1, or 0.0.0.0 (every interface)",
                ) from None
            if exc.errno == errno.EACCES:
                raise UsageError(
                    f"port {port} needs privileges to bind (ports below 1024)",
                    hint="choose --port 1024 or above (8000 is the default) and put a proxy in front for port 80",
                ) from None
            raise


def build_app(settings: ServeSettings) -> Any:
    """The application with its model loaded and verified (raises ImgclsError before any socket opens)."""
    from imgcls.serve.app import create_app

    check_environment(settings)
    return create_app(settings)


def check_model(settings: ServeSettings) -> dict[str, Any]:
    """Verify the model in this process without serving it (``--workers N``: each worker loads its own)."""
    from imgcls.bundle import load_bundle
    from imgcls.runtime import model_file_for, resolve_model
    from imgcls.runtime.profile import resolve_engine
    from imgcls.serve.model import check_ref

    check_environment(settings)
    if settings.watch_s is not None:  # (a single process checks this in create_app)
        from imgcls.store.watcher import check_watch_ref

        check_watch_ref(settings.model, settings.watch_s)
    bundle = load_bundle(resolve_model(check_ref(settings.model)))
    choice = resolve_engine(
        bundle, engine=settings.engine, precision=settings.precision, device=settings.device,
        threads=settings.intra_threads,
    )  # fmt: skip
    model_file = model_file_for(bundle, choice.precision)
    return {
        "name": bundle.name, "sha256": bundle.digest, "model_file": model_file, "engine": choice.engine,
        "precision": choice.precision,
    }  # fmt: skip


class Server(uvicorn.Server):
    """uvicorn's server, except that a drained SIGTERM/SIGINT ends the process with exit status 0.

    (uvicorn re-raises the signal once it has shut down gracefully, so the process would die of it.)
    """

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        captured = getattr(self, "_captured_signals", None)
        if isinstance(captured, list):
            captured.clear()


def _config(app: Any, settings: ServeSettings, http: Any, **extra: Any) -> Any:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=http,  # httptools with a bounded head, a head deadline and a connection cap (serve/protocol.py)
        # no WebSocket route: an 'Upgrade: websocket' request is served as the HTTP request it also is. With uvicorn's
        # default, its websocket protocol took the connection over (out of the connection cap and the head deadline)
        # and answered /livez a text/plain 403 with no body
        ws="none",
        timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]  # a float works (call_later)
        log_config=None,
        access_log=False,
        server_header=False,
        # X-Forwarded-* are not trusted (nothing here uses the client address; a proxy in front logs it), and
        # uvicorn's ProxyHeadersMiddleware would be one more layer on every request
        proxy_headers=False,
        timeout_graceful_shutdown=int(max(1, GRACE_AFTER_DRAIN_S)),
        backlog=2048,
        **extra,
    )


def run_app(app: Any, settings: ServeSettings) -> None:
    """Serve ``app`` in this process until SIGTERM/SIGINT (blocking)."""
    from imgcls.serve.protocol import GuardedProtocol

    Server(_config(app, settings, GuardedProtocol.for_settings(settings))).run()


def run_workers(settings: ServeSettings) -> None:
    """Serve with ``settings.workers`` processes sharing the socket; each builds its app from the environment."""
    from uvicorn.supervisors import Multiprocess

    os.environ[SETTINGS_ENV] = settings_to_env(settings)
    config = _config(
        "imgcls.serve.app:create_app_from_env",
        settings,
        "imgcls.serve.protocol:EnvProtocol",  # a worker binds the limits from its own settings
        factory=True,
        workers=settings.workers,
    )
    sock = config.bind_socket()
    Multiprocess(config, sockets=[sock]).run()
