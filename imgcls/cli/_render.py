"""Rendering shared by the commands: the console, errors (message + hint, no traceback) and tables.

The consoles print text as it is: a path like ``runs/lr[0.1]``, a class folder named ``:cat:`` or an error message
with brackets is neither rich markup nor an emoji (a ``[/x]`` in ``--out`` crashed ``imgcls train``). Styled text is
asked for with :func:`styled`, which escapes the values it fills in. What a terminal would act on (an escape
sequence in a file name, a bidirectional override) or cannot encode (a byte of a file name that is not UTF-8) is
shown as an escape (:func:`imgcls.text.printable`), by the consoles, :func:`styled` and the log lines alike.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console

from imgcls.text import printable

if TYPE_CHECKING:
    from rich.text import Text

PIPE_WIDTH = 200
"""The width of output that goes to a file or a pipe (rich's own is 80, which cut bench's 14-column table into
``on… fp…`` cells in ``imgcls bench ... > bench.txt``); COLUMNS, where set, decides instead."""


class _Console(Console):
    """A console that shows every string it is given as :func:`~imgcls.text.printable` writes it."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(printable(text), **kwargs)

    def on_broken_pipe(self) -> None:
        """The reader went away (`imgcls predict DIR | head`): rich exits 1, which reads as "a file failed"; end as
        `ls` or `cat` would, 128 + SIGPIPE (141), as the json and csv output already did."""
        self.quiet = True
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit finds no closed pipe
        raise SystemExit(128 + signal.SIGPIPE)


class LogFormatter(logging.Formatter):
    """The CLI's log lines (``WARNING imgcls.data.folder: ...``), their user text shown by
    :func:`~imgcls.text.printable`."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def _console(*, stderr: bool = False) -> Console:
    out = _Console(stderr=stderr, markup=False, emoji=False)
    if not out.is_terminal and not os.environ.get("COLUMNS"):
        out.width = PIPE_WIDTH  # a table takes the width it needs, up to this
    return out


console = _console()
err_console = _console(stderr=True)


@dataclass
class _State:
    verbose: bool = False


STATE = _State()


def styled(template: str, *values: object, **named: object) -> Text:
    """``template`` in rich markup, its ``{}`` fields filled as :meth:`str.format` does; a number keeps its format
    spec (``{:.4f}``), any other value is shown as it is, not read as markup or an emoji."""
    from rich.markup import escape
    from rich.text import Text

    def shown(value: object) -> object:
        return value if isinstance(value, int | float) else escape(printable(str(value)))

    filled = template.format(*map(shown, values), **{k: shown(v) for k, v in named.items()})
    return Text.from_markup(filled, emoji=False)


def print_error(message: str, hint: str | None = None) -> None:
    err_console.print(styled("[bold red]error:[/] {}", message), highlight=False, soft_wrap=True)
    if hint:
        err_console.print(styled("[yellow]hint:[/] {}", hint), highlight=False, soft_wrap=True)


def exit_now(code: int) -> NoReturn:
    """End the process at once (``os._exit``), without the interpreter's teardown, whose destruction of native
    threads (a distributed backend's, stuck or not) can abort the process; the logs and the streams are flushed.

    What a teardown would remove still is: the temporary folders of weakref finalizers (``TemporaryDirectory``:
    W&B's wandb-media copies of every logged image stayed in /tmp per distributed run). Only those run here.
    """
    import weakref

    with contextlib.suppress(Exception):
        weakref.finalize._exitfunc()  # type: ignore[attr-defined]  # what atexit runs for them
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(app: Any) -> None:
    """Run the Typer app and turn every failure into a clear message and an exit code."""
    from imgcls.errors import ImgclsError

    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:  # machine output (CSV, a path) carries a file name's bytes as they are, even when
        reconfigure(errors="surrogateescape")  # they are not UTF-8 (a strict locale raised UnicodeEncodeError)
    try:
        app()
    except ImgclsError as exc:
        if STATE.verbose:
            err_console.print_exception()
        print_error(exc.message, exc.hint)
        if exc.exit_at_once:
            exit_now(exc.exit_code)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print_error("interrupted")
        sys.exit(130)
    except SystemExit as exc:
        if exc.code == 1 and type(sys.stdout).__name__.lstrip("_") == "PacifyFlushWrapper":
            # click's answer to EPIPE (`imgcls predict DIR | head`): it exits 1, which predict documents as "some
            # file failed". The reader went away, so exit as `ls` or `cat` would end: 128 + SIGPIPE.
            sys.exit(128 + signal.SIGPIPE)
        raise
    except OSError as exc:
        if STATE.verbose:
            err_console.print_exception()
        if exc.filename is None:  # a socket, a pipe: not a path the user can fix
            _unexpected(exc)
        print_error(*file_system_error(exc))
        sys.exit(2)
    except Exception as exc:  # never a traceback to a user unless asked for
        if STATE.verbose:
            err_console.print_exception()
        _unexpected(exc)


def _unexpected(exc: BaseException) -> NoReturn:
    print_error(
        f"unexpected {type(exc).__name__}: {exc}",
        "run again with --verbose for the traceback, and report it if it persists",
    )
    sys.exit(1)


_FIX = {
    errno.ENOSPC: "free some space on that disk, or write somewhere else",
    errno.EDQUOT: "free some space in your quota, or write somewhere else",
    errno.EACCES: "choose a folder you may write to (or read, for an input)",
    errno.EPERM: "choose a folder you may write to (or read, for an input)",
    errno.EROFS: "that file system is read-only: write somewhere else",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "the path is a folder where a file is needed: name a file",
    errno.ENAMETOOLONG: "choose a shorter name",
    errno.EEXIST: "a file of that name is in the way: choose another path",
}


def file_system_error(exc: OSError) -> tuple[str, str]:
    """An error a path caused (a folder that cannot be made, a full disk) as ``message, hint``, for any command."""
    where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    reason = (exc.strerror or type(exc).__name__).lower()
    fix = _FIX.get(exc.errno or 0, "check the path: every folder above it must be one you may use")
    return f"cannot use {where}: {reason}", fix
