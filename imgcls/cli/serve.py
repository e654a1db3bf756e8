"""Serve a model over HTTP: onnxruntime with dynamic batching, limits, metrics, a prediction log and a web page."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from imgcls.cli._render import STATE, err_console


def serve(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="Bundle directory (exported with `imgcls export`) or store reference URI/NAME@ALIAS or "
            "URI/NAME:VERSION.",
            show_default=False,
        ),
    ],
    host: Annotated[
        str, typer.Option(help="Address to bind; 0.0.0.0 exposes the server to the network.")
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            min=0,
            max=65535,
            envvar="PORT",
            help="Port to listen on; $PORT sets it when --port is not given (the Cloud Run contract).",
        ),
    ] = 8000,
    device: Annotated[
        str, typer.Option(help="auto, cpu, cuda or tensorrt (cuda/tensorrt fail unless they really load).")
    ] = "auto",
    engine: Annotated[
        str,
        typer.Option(
            help="auto (the bundle's serving profile from `imgcls bench --pick`, else onnxruntime), "
            "onnxruntime or openvino."
        ),
    ] = "auto",
    precision: Annotated[
        str | None,
        typer.Option(
            help="fp32, bf16 (openvino), int8 or fp16 (default: the serving profile's, else fp32).", show_default=False
        ),
    ] = None,
    int8: Annotated[bool, typer.Option("--int8", help="Serve the static-int8 model (imgcls export --int8).")] = False,
    max_batch: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=1024,
            help="Most images per inference call (default: the profile's, else 32).",
            show_default=False,
        ),
    ] = None,
    max_delay_ms: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=10_000.0,
            help="Longest wait for a batch to fill after its first image (default: the profile's, else 5 ms).",
            show_default=False,
        ),
    ] = None,
    max_queue: Annotated[int, typer.Option(min=1, help="Images admitted at once; beyond, 503 + Retry-After.")] = 256,
    timeout_s: Annotated[float, typer.Option(min=0.001, help="Per-request limit; beyond, 504.")] = 10.0,
    max_upload_mb: Annotated[
        float, typer.Option(min=0.001, help="Largest request body (413), checked while it streams.")
    ] = 10.0,
    max_pixels: Annotated[int, typer.Option(min=1, help="Largest image, width × height (413).")] = 40_000_000,
    max_decode_mpixels: Annotated[
        float,
        typer.Option(
            min=0.001,
            help="Millions of pixels decoded at once by uploads over 2 MP (they take turns; small ones never wait).",
        ),
    ] = 48.0,
    log_predictions: Annotated[
        str | None,
        typer.Option(
            help="SQLite prediction log (default: ~/.cache/imgcls/serve/predictions.sqlite; 'off' disables it).",
            show_default=False,
        ),
    ] = None,
    log_export: Annotated[
        str | None,
        typer.Option(
            "--log-export",
            metavar="URI",
            help="Also write the prediction log as closed segments (JSON lines, gzip; one per replica per interval) "
            "to a folder or gs://BUCKET/PREFIX/, for `imgcls drift report --log URI` over a whole fleet.",
            show_default=False,
        ),
    ] = None,
    log_export_every: Annotated[
        float, typer.Option("--log-export-every", metavar="SECONDS", min=1.0, help="Close a segment this often.")
    ] = 300.0,
    wandb: Annotated[bool, typer.Option("--wandb", help="Log predictions to Weights & Biases (background).")] = False,
    wandb_project: Annotated[str, typer.Option(help="W&B project for --wandb.")] = "imgcls-serve",
    workers: Annotated[int, typer.Option(min=1, max=64, help="Server processes (each loads the model).")] = 1,
    drain_s: Annotated[float, typer.Option(min=0.0, help="On SIGTERM: longest wait for in-flight requests.")] = 8.0,
    decode_threads: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Threads decoding uploads (default: half the cores).", show_default=False),
    ] = None,
    intra_threads: Annotated[
        int | None,
        typer.Option(min=1, help="onnxruntime intra-op threads (default: one per core).", show_default=False),
    ] = None,
    access_log: Annotated[bool, typer.Option(help="One JSON log line per request on stderr.")] = True,
    read_timeout_s: Annotated[
        float,
        typer.Option(
            min=0.001, max=3600.0, help="Longest a client may take to send the request head, then its body (JSON 408)."
        ),
    ] = 10.0,
    max_connections: Annotated[
        int, typer.Option(min=1, help="Most open connections per process; beyond, 503 and close.")
    ] = 1000,
    max_header_bytes: Annotated[
        int, typer.Option(min=1024, max=1024 * 1024, help="Largest request head (request line + headers); beyond, 431.")
    ] = 32 * 1024,
    keep_alive_s: Annotated[
        float, typer.Option(min=0.001, max=600.0, help="Close a kept-alive connection idle this long.")
    ] = 5.0,
    allow_models: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-models",
            metavar="LOCATION",
            help="A store URI or directory an admin reload may load models from (repeatable; default: the store or "
            "directory --model is in).",
            show_default=False,
        ),
    ] = None,
    watch: Annotated[
        float | None,
        typer.Option(
            "--watch",
            metavar="SECONDS",
            help="Poll the --model store alias (URI/NAME@ALIAS) every SECONDS; a move is pulled, verified and "
            "swapped in without a restart (a bad version is refused, the old one keeps serving).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve a model over HTTP: onnxruntime with dynamic batching, limits, metrics, a prediction log and a web page."""
    import os

    from pydantic import ValidationError

    from imgcls.errors import UsageError
    from imgcls.serve.logs import configure_logging
    from imgcls.serve.settings import ADMIN_TOKEN_ENV, ServeSettings, default_log_path, token_from_env

    if log_predictions is None:
        log_path: Path | None = default_log_path()
    elif log_predictions.strip().lower() in ("off", "none", "no", "false", "0", ""):
        log_path = None
    else:
        log_path = Path(log_predictions)
    token = token_from_env(os.environ.get(ADMIN_TOKEN_ENV))
    try:
        settings = ServeSettings(
            model=model,
            host=host,
            port=port,
            device=device,  # type: ignore[arg-type]
            engine=engine,  # type: ignore[arg-type]
            precision=precision,  # type: ignore[arg-type]
            int8=int8,
            max_batch=max_batch,
            max_delay_ms=max_delay_ms,
            max_queue=max_queue,
            timeout_s=timeout_s,
            max_upload_mb=max_upload_mb,
            max_pixels=max_pixels,
            max_decode_mpixels=max_decode_mpixels,
            log_predictions=log_path,
            log_export=log_export,
            log_export_every_s=log_export_every,
            wandb=wandb,
            wandb_project=wandb_project,
            workers=workers,
            drain_s=drain_s,
            decode_threads=decode_threads,
            intra_threads=intra_threads,
            access_log=access_log,
            watch_s=watch,
            read_timeout_s=read_timeout_s,
            max_connections=max_connections,
            max_header_bytes=max_header_bytes,
            keep_alive_s=keep_alive_s,
            allow_models=tuple(allow_models) if allow_models else None,
            admin_token=token,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        flag = "--" + str(first["loc"][0]).replace("_", "-") if first.get("loc") else "a flag"
        raise UsageError(f"{flag}: {first['msg']}", hint="see `imgcls serve --help`") from None

    configure_logging(logging.DEBUG if STATE.verbose else logging.INFO)
    from imgcls.serve import runner

    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    admin = "admin endpoints on (IMGCLS_ADMIN_TOKEN)" if token else "admin endpoints off (set IMGCLS_ADMIN_TOKEN)"
    log_note = f"prediction log {log_path}" if log_path else "prediction log off"
    if log_export:
        log_note += f", exported to {log_export} every {log_export_every:g} s"
    if workers == 1:
        app = runner.build_app(settings)
        served = app.state.holder.current
        err_console.print(
            f"serving [bold]{served.name}[/] version [bold]{served.version}[/] on {served.predictor.engine.name} "
            f"{served.predictor.provider} ({served.predictor.precision}, {served.predictor.choice_reason}, "
            f"max batch {served.batcher.max_batch}) at [bold]{url}[/] — {admin}; {log_note}",
            highlight=False,
            soft_wrap=True,
        )
        runner.run_app(app, settings)
    else:
        info = runner.check_model(settings)
        err_console.print(
            f"serving [bold]{info['name']}[/] ({info['engine']} {info['precision']}) with {workers} workers at "
            f"[bold]{url}[/] — "
            f"{admin}; {log_note}",
            highlight=False,
            soft_wrap=True,
        )
        runner.run_workers(settings)
