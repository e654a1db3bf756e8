"""Rendering shared by the commands: the console, errors (message + hint, no traceback) and tables."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


@dataclass
class _State:
    verbose: bool = False


STATE = _State()


def print_error(message: str, hint: str | None = None) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    if hint:
        err_console.print(f"[yellow]hint:[/] {hint}", highlight=False, soft_wrap=True)


def run(app: Any) -> None:
    """Run the Typer app and turn every failure into a clear message and an exit code."""
    from imgcls.errors import ImgclsError

    try:
        app()
    except ImgclsError as exc:
        if STATE.verbose:
            err_console.print_exception()
        print_error(_escape(exc.message), _escape(exc.hint) if exc.hint else None)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print_error("interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # never a traceback to a user unless asked for
        if STATE.verbose:
            err_console.print_exception()
        print_error(
            _escape(f"unexpected {type(exc).__name__}: {exc}"),
            "run again with --verbose for the traceback, and report it if it persists",
        )
        sys.exit(1)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
