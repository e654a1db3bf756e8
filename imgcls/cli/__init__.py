"""The ``imgcls`` command line: one Typer app, one thin module per subcommand.

Command modules import only typer/rich at module level; each command imports the core inside its body,
so ``imgcls --help`` never pays for torch.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from imgcls import __version__
from imgcls.cli import _render

app = typer.Typer(
    name="imgcls",
    help="Train, export, push, serve, predict and monitor image classifiers — one CLI, one model bundle.",
    no_args_is_help=True,
    add_completion=True,  # imgcls --install-completion / --show-completion
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"imgcls {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging and tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    _render.STATE.verbose = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# (command name, module under imgcls.cli, attribute, kind): "command" is a function, "group" a Typer app.
COMMANDS = [
    ("train", "train", "train", "command"),
    ("sweep", "sweep", "sweep", "command"),
    ("data", "data", "app", "group"),
    ("export", "export", "export", "command"),
    ("predict", "predict", "predict", "command"),
    ("serve", "serve", "serve", "command"),
    ("bench", "bench", "bench", "command"),
    ("push", "push", "push", "command"),
    ("pull", "pull", "pull", "command"),
    ("models", "models", "app", "group"),
    ("doctor", "doctor", "doctor", "command"),
    ("drift", "drift", "app", "group"),
]


def _register() -> None:
    import importlib

    for name, module_name, attr, kind in COMMANDS:
        module = importlib.import_module(f"imgcls.cli.{module_name}")
        obj = getattr(module, attr)
        if kind == "group":
            app.add_typer(obj, name=name)
        else:
            app.command(name, help=module.__doc__)(obj)


_register()


def main() -> None:
    """Console-script entry point: renders ImgclsError as message + hint and exits with its code."""
    _render.run(app)
