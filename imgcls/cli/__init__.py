"""The ``imgcls`` command line: one Typer app, one thin module per subcommand, each imported on use.

``imgcls --help`` lists :data:`COMMANDS` from the table below without importing any command module (pip's
``commands/__init__.py`` does the same "to avoid costly imports for --help"); ``imgcls serve ...`` imports
``imgcls.cli.serve`` only. Command modules import only typer/rich (and, for serve, its pydantic settings) at
module level; each command imports the core inside its body, so no help page pays for torch.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from imgcls import __version__
from imgcls.cli import _render

# name -> (kind, the one line `imgcls --help` shows). The code is in module imgcls.cli.NAME: a "command" is its
# function NAME (its help: the module docstring), a "group" its Typer app `app`. tests/unit/test_cli_help.py checks
# each line against the loaded command's own help, so the two cannot drift apart.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": (
        "command",
        "Train a classifier and write a verified model bundle (weights, metrics, plots, config, samples).",
    ),
    "sweep": (
        "command",
        "Search hyper-parameters with Optuna: every trial trains a normal bundle; the best one is reported.",
    ),
    "export": (
        "command",
        "Export a bundle's model to ONNX (model.onnx; --int8 / --fp16 add quantized / half-precision copies), gated.",
    ),
    "predict": (
        "command",
        "Predict image files with an exported bundle (onnxruntime or OpenVINO, no torch): files, directories and "
        "globs.",
    ),
    "serve": (
        "command",
        "Serve a model over HTTP: onnxruntime with dynamic batching, limits, metrics, a prediction log and a web page.",
    ),
    "bench": (
        "command",
        "Measure engines in process (--model) or a running server over HTTP (--url); --pick stores the fastest "
        "gated engine.",
    ),
    "push": (
        "command",
        "Upload a verified bundle to a model store as a new immutable version (an identical bundle: a no-op).",
    ),
    "pull": (
        "command",
        "Download a stored version into a folder: verified (every sha256) in a temporary folder, then renamed.",
    ),
    "doctor": (
        "command",
        "Check what this machine can do (CUDA, onnxruntime, OpenVINO, CPU ISA, GCS, W&B, disk) and how to fix it.",
    ),
    "data": (
        "group",
        "Inspect datasets: classes, images per class and split, sizes, per-channel mean/std.",
    ),
    "models": (
        "group",
        "List, show and alias the models in a store (folder, file:// or gs://).",
    ),
    "drift": (
        "group",
        "Drift: a reference made with the model, reports over the server's own traffic.",
    ),
}


class _Listed(TyperCommand):
    """A command known by its name and one-line help only, until it runs (:meth:`LazyGroup.resolve_command`)."""


def load_command(name: str) -> Any:
    """Import command ``name``'s module and build its click command (what ``imgcls NAME ...`` runs)."""
    import typer.main

    kind, _ = COMMANDS[name]
    module = importlib.import_module(f"imgcls.cli.{name}")
    if kind == "group":
        return typer.main.get_group(module.app)
    one = typer.Typer(add_completion=False, rich_markup_mode="rich", pretty_exceptions_enable=False)
    one.command(name, help=module.__doc__)(getattr(module, name))
    return typer.main.get_command(one)


class LazyGroup(TyperGroup):
    """The root group: lists :data:`COMMANDS` from the table; a command is imported and built when it is
    resolved (run, its own ``--help``, or completion of its options), never for ``imgcls --help``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name, (_, line) in COMMANDS.items():
            self.commands.setdefault(name, _Listed(name=name, callback=None, help=line))

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        if args and isinstance(self.commands.get(args[0]), _Listed):
            self.commands[args[0]] = load_command(args[0])
        return super().resolve_command(ctx, args)


app = typer.Typer(
    name="imgcls",
    cls=LazyGroup,
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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_render.LogFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler])


def main() -> None:
    """Console-script entry point: renders ImgclsError as message + hint and exits with its code."""
    _render.run(app)
