"""Serve a model over HTTP: onnxruntime with dynamic batching, limits, metrics, a prediction log and a web page."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from imgcls.cli._render import STATE, err_console, styled

# Every option's help, default and range come from its ServeSettings field (its docstring, default and bounds):
# this module restates none of them. Importing the settings (pydantic) costs `imgcls serve` only: `imgcls --help`
# never imports this module (imgcls.cli.LazyGroup).
from imgcls.serve.settings import ServeSettings

FIELDS = ServeSettings.model_fields
# flag names that are not "--" + the field name with dashes
FLAG_NAMES = {
    "watch_s": "--watch",
    "log_export_every_s": "--log-export-every",
    "wandb_every_s": "--wandb-every",
    "wandb_drift_every_s": "--wandb-drift-every",
}


def flag_name(field: str) -> str:
    return FLAG_NAMES.get(field, "--" + field.replace("_", "-"))


def default(field: str) -> Any:
    """The field's default: the flag's."""
    return FIELDS[field].default


def option(field: str, *decls: str, **kwargs: Any) -> Any:
    """The ``typer.Option`` of ServeSettings ``field``: its docstring as help, its closed bounds as the range.

    An open bound (``gt``/``lt``) has no click range type: the help says it and the settings enforce it
    (the error names the flag).
    """
    info = FIELDS[field]
    help_text = " ".join((info.description or "").split())
    low: Any = None
    high: Any = None
    open_bounds = []
    for rule in info.metadata:  # pydantic's annotated_types bounds: Ge(ge=...), Le(le=...), Gt(gt=...), Lt(lt=...)
        low = getattr(rule, "ge", low)
        high = getattr(rule, "le", high)
        if getattr(rule, "gt", None) is not None:
            open_bounds.append(f"> {rule.gt:g}")
        if getattr(rule, "lt", None) is not None:
            open_bounds.append(f"< {rule.lt:g}")
    if open_bounds:
        help_text += f" Must be {' and '.join(open_bounds)}."
    if info.default is None:
        kwargs.setdefault("show_default", False)  # the help says what None means
    return typer.Option(*decls, help=help_text, min=low, max=high, **kwargs)


def serve(
    model: Annotated[str, option("model", "--model", "-m", show_default=False)],
    host: Annotated[str, option("host")] = default("host"),
    port: Annotated[int, option("port", envvar="PORT")] = default("port"),
    device: Annotated[str, option("device")] = default("device"),
    engine: Annotated[str, option("engine")] = default("engine"),
    precision: Annotated[str | None, option("precision")] = default("precision"),
    int8: Annotated[bool, option("int8", "--int8")] = default("int8"),
    max_batch: Annotated[int | None, option("max_batch")] = default("max_batch"),
    max_delay_ms: Annotated[float | None, option("max_delay_ms")] = default("max_delay_ms"),
    max_queue: Annotated[int, option("max_queue")] = default("max_queue"),
    timeout_s: Annotated[float, option("timeout_s")] = default("timeout_s"),
    max_upload_mb: Annotated[float, option("max_upload_mb")] = default("max_upload_mb"),
    max_pixels: Annotated[int, option("max_pixels")] = default("max_pixels"),
    max_decode_mpixels: Annotated[float, option("max_decode_mpixels")] = default("max_decode_mpixels"),
    max_files: Annotated[int, option("max_files")] = default("max_files"),
    uncertain_below: Annotated[float, option("uncertain_below")] = default("uncertain_below"),
    log_predictions: Annotated[str | None, option("log_predictions")] = None,
    log_export: Annotated[str | None, option("log_export", "--log-export", metavar="URI")] = default("log_export"),
    log_export_every: Annotated[float, option("log_export_every_s", "--log-export-every", metavar="SECONDS")] = default(
        "log_export_every_s"
    ),
    wandb: Annotated[bool, option("wandb", "--wandb")] = default("wandb"),
    wandb_project: Annotated[str, option("wandb_project")] = default("wandb_project"),
    wandb_mode: Annotated[str | None, option("wandb_mode")] = default("wandb_mode"),
    wandb_every: Annotated[float, option("wandb_every_s", "--wandb-every", metavar="SECONDS")] = default(
        "wandb_every_s"
    ),
    wandb_drift_every: Annotated[
        str | None, option("wandb_drift_every_s", "--wandb-drift-every", metavar="DURATION")
    ] = default("wandb_drift_every_s"),
    workers: Annotated[int, option("workers")] = default("workers"),
    drain_s: Annotated[float, option("drain_s")] = default("drain_s"),
    decode_threads: Annotated[int | None, option("decode_threads")] = default("decode_threads"),
    intra_threads: Annotated[int | None, option("intra_threads")] = default("intra_threads"),
    access_log: Annotated[bool, option("access_log")] = default("access_log"),
    read_timeout_s: Annotated[float, option("read_timeout_s")] = default("read_timeout_s"),
    max_connections: Annotated[int, option("max_connections")] = default("max_connections"),
    max_header_bytes: Annotated[int, option("max_header_bytes")] = default("max_header_bytes"),
    keep_alive_s: Annotated[float, option("keep_alive_s")] = default("keep_alive_s"),
    allow_models: Annotated[list[str] | None, option("allow_models", "--allow-models", metavar="LOCATION")] = default(
        "allow_models"
    ),
    watch: Annotated[float | None, option("watch_s", "--watch", metavar="SECONDS")] = default("watch_s"),
) -> None:
    """Serve a model over HTTP: onnxruntime with dynamic batching, limits, metrics, a prediction log and a web page."""
    import os

    from pydantic import ValidationError

    from imgcls.errors import UsageError
    from imgcls.serve.logs import configure_logging
    from imgcls.serve.settings import ADMIN_TOKEN_ENV, default_log_path, token_from_env

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
            max_files=max_files,
            uncertain_below=uncertain_below,
            log_predictions=log_path,
            log_export=log_export,
            log_export_every_s=log_export_every,
            wandb=wandb,
            wandb_project=wandb_project,
            wandb_mode=wandb_mode,  # type: ignore[arg-type]
            wandb_every_s=wandb_every,
            wandb_drift_every_s=wandb_drift_every,  # type: ignore[arg-type]  # a duration: parsed by the settings
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
        message = str(first["msg"]).removeprefix("Value error, ")
        if not first.get("loc"):  # a rule across flags names them itself
            raise UsageError(message, hint="see `imgcls serve --help`") from None
        raise UsageError(f"{flag_name(str(first['loc'][0]))}: {message}", hint="see `imgcls serve --help`") from None

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
            styled(
                "serving [bold]{}[/] version [bold]{}[/] on {} at [bold]{}[/] — {}; {}",
                served.name,
                served.version,
                f"{served.predictor.engine.name} {served.predictor.provider} ({served.predictor.precision}, "
                f"{served.predictor.choice_reason}, max batch {served.batcher.max_batch})",
                url,
                admin,
                log_note,
            ),
            highlight=False,
            soft_wrap=True,
        )
        runner.run_app(app, settings)
    else:
        info = runner.check_model(settings)
        err_console.print(
            styled(
                "serving [bold]{}[/] ({} {}) with {} workers at [bold]{}[/] — {}; {}",
                info["name"],
                info["engine"],
                info["precision"],
                workers,
                url,
                admin,
                log_note,
            ),
            highlight=False,
            soft_wrap=True,
        )
        runner.run_workers(settings)
