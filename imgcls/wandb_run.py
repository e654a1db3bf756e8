"""Starting a W&B run, the one way imgcls does it: quiet settings, the run folder made, a clear error on failure.

wandb is never imported here: the caller passes the module it imported lazily (``imgcls.deps.require``), so this
leaf costs nothing to import and the rooms that log to W&B (train, drift, store, serve) share one start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from imgcls.errors import ImgclsError

LOGIN_HINT = "check your W&B login, or use --wandb-mode offline"


def quiet_settings(wandb: Any) -> Any:
    """``wandb.Settings`` that keep W&B off the terminal and the machine: no console capture, code or stats."""
    return wandb.Settings(silent=True, console="off", save_code=False, x_disable_stats=True)


def start_run(
    wandb: Any,
    *,
    fail: Callable[[Exception], ImgclsError] | None = None,
    directory: str | Path | None = None,
    quiet: bool = True,
    **init: Any,
) -> Any:
    """``wandb.init(**init)`` in ``directory`` (made first), with :func:`quiet_settings` unless ``quiet`` is off.

    Raises:
        ImgclsError: ``fail(exc)`` when W&B could not start the run (by default: exit 2, with a login hint);
            wandb raises many types (UsageError, CommError, ...) and a user must see none of them as a traceback.
    """
    if directory is not None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        init["dir"] = str(directory)
    if quiet:
        init.setdefault("settings", quiet_settings(wandb))
    try:
        return wandb.init(**init)
    except Exception as exc:
        if fail is not None:
            raise fail(exc) from exc
        raise ImgclsError(
            f"could not start the W&B run ({type(exc).__name__}: {exc})", hint=LOGIN_HINT, exit_code=2
        ) from exc
