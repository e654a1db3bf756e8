"""Starting a W&B run, the one way imgcls does it: the mode decided here, quiet settings, the run folder made, a
clear error on failure.

wandb is never imported here: the caller passes the module it imported lazily (``imgcls.deps.require``), so this
leaf costs nothing to import and the rooms that log to W&B (train, drift, store, serve) share one start-up.
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from imgcls.errors import ImgclsError, UsageError

LOGIN_HINT = "check your W&B login, or use --wandb-mode offline"
MODES = ("online", "offline")  # what a --wandb-mode flag takes
_OFFLINE = ("offline", "dryrun", "disabled")  # WANDB_MODE values that need no key


def resolve_mode(
    environ: Mapping[str, str] | None = None, *, requested: str | None = None, fallback: str | None = None
) -> str:
    """The W&B mode, decided at the edge: wandb itself would prompt on a terminal, or fail, without a key.

    ``requested`` (a ``--wandb-mode`` flag: online or offline) wins, then ``WANDB_MODE`` (offline, dryrun and
    disabled need no key); otherwise online when an API key is configured (``WANDB_API_KEY``, or ``~/.netrc`` from
    ``wandb login``). With no key and nothing asking for online, ``fallback`` when given (a push's lineage record
    goes offline) or a refusal (``serve --wandb``, ``drift report --wandb``).

    Raises:
        UsageError: an unknown ``requested`` mode, or online (asked for, or by default without ``fallback``)
            with no API key.
    """
    env = os.environ if environ is None else environ
    if requested is not None and requested.strip().lower() not in MODES:
        raise UsageError(f"--wandb-mode must be online or offline, not {requested!r}")
    asked = (requested or env.get("WANDB_MODE") or "").strip().lower()
    if asked in _OFFLINE:
        return "disabled" if asked == "disabled" else "offline"
    if has_api_key(env):
        return "online"
    if requested is not None:
        raise UsageError(
            "--wandb-mode online needs a W&B API key, and none was found (WANDB_API_KEY or ~/.netrc)",
            hint="run `wandb login` or export WANDB_API_KEY=..., or use --wandb-mode offline "
            "(sync later with `wandb sync wandb/offline-run-*`)",
        )
    if fallback is not None and not asked:
        return fallback
    raise UsageError(
        "--wandb: no W&B API key is configured and WANDB_MODE is not offline",
        hint="run `wandb login` (or export WANDB_API_KEY=...), or pass --wandb-mode offline "
        "(or export WANDB_MODE=offline) to log locally",
    )


def has_api_key(environ: Mapping[str, str] | None = None, home: Path | None = None) -> bool:
    """True when W&B can authenticate without asking: ``WANDB_API_KEY`` is set, or the netrc file (``NETRC``, else
    ``.netrc`` in ``home``, by default the user's) has a password for W&B's host (``WANDB_BASE_URL``'s)."""
    env = os.environ if environ is None else environ
    if env.get("WANDB_API_KEY"):
        return True
    path = env.get("NETRC") or os.path.join(home if home is not None else os.path.expanduser("~"), ".netrc")
    try:
        host = (env.get("WANDB_BASE_URL") or "api.wandb.ai").split("//")[-1].split("/")[0]
        auth = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


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
