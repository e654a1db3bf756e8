"""Download a stored version into a folder: verified (every sha256) in a temporary folder, then renamed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imgcls.cli._render import console, styled


def pull(
    ref: Annotated[
        str,
        typer.Argument(
            help="URI/NAME@ALIAS or URI/NAME:VERSION (NAME@ALIAS alone: the default store; no selector: @latest).",
            show_default=False,
        ),
    ],
    to: Annotated[Path, typer.Option("--to", help="Destination folder (must not exist, or be empty).")],
    max_bundle_mb: Annotated[
        float,
        typer.Option(
            min=0.001,
            help="Refuse, before downloading anything, a version whose files add up to more than this (MB); the "
            "download is also stopped if it grows past it.",
        ),
    ] = 8192.0,
) -> None:
    from imgcls.cli._transfer import transfer_progress
    from imgcls.fsio import check_output
    from imgcls.store import Store, parse_ref

    mref = parse_ref(ref)
    check_output(to, "--to", folder=True)  # before the download: gs://b/x is not a local folder named gs:
    store = Store.open(mref.store)
    version = store.resolve(mref)
    with transfer_progress("downloading") as progress:
        dest = store.pull(version, to, progress=progress, max_bytes=int(max_bundle_mb * 2**20))
    console.print(
        styled(
            "pulled [bold]{}[/] version [bold]{}[/] ({}) into {} (verified)",
            version.name,
            version.seq,
            version.id,
            dest,
        ),
        highlight=False,
        soft_wrap=True,
    )
