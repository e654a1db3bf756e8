"""Upload a verified bundle to a model store as a new immutable version (an identical bundle: a no-op)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imgcls.cli._render import console, styled


def push(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (holds bundle.json).", show_default=False)],
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Store URI: a folder, file:///path or gs://bucket/prefix. Default: $IMGCLS_STORE or "
            "~/.cache/imgcls/store.",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Model name in the store (default: the bundle's name).")
    ] = None,
    alias: Annotated[
        list[str] | None,
        typer.Option("--alias", "-a", help="Also point this alias at the version (repeatable). `latest` moves itself."),
    ] = None,
    require: Annotated[
        list[str] | None,
        typer.Option(
            "--require",
            metavar="METRIC>=X",
            help="Gate the --alias moves on the bundle's own metrics, e.g. test_top1>=0.9 (repeatable).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Move the --alias even to a bundle `imgcls serve` would refuse (no export)."),
    ] = False,
    wandb: Annotated[
        bool, typer.Option("--wandb", help="Log a W&B reference artifact pointing at the stored version.")
    ] = False,
    wandb_project: Annotated[str, typer.Option("--wandb-project", help="W&B project for --wandb.")] = "imgcls",
) -> None:
    from imgcls.cli._transfer import format_size, transfer_progress
    from imgcls.store import Store, default_store_uri
    from imgcls.store.promotion import parse_requirements

    requirements = parse_requirements(require or [])
    store = Store.open(to or default_store_uri())
    with transfer_progress("uploading") as progress:
        result = store.push(
            bundle, name=name, aliases=alias or [], progress=progress, require=requirements, force=force
        )
    version = result.version
    if result.created:
        console.print(
            styled(
                "pushed [bold]{}[/] version [bold]{}[/] ({}, {}) to {}",
                version.name,
                version.seq,
                version.id,
                format_size(version.size),
                store.uri,
            ),
            highlight=False,
        )
    else:
        console.print(
            styled(
                "already stored: [bold]{}[/] version [bold]{}[/] ({}) in {}; {}",
                version.name,
                version.seq,
                version.id,
                store.uri,
                f"restored {len(result.restored)} missing file(s): {', '.join(result.restored)}"
                if result.restored
                else "nothing uploaded",
            ),
            highlight=False,
        )
    for move in result.aliases:
        before = f" (was {move.previous.seq})" if move.previous is not None and move.changed else ""
        console.print(f"  @{move.alias} -> {move.version.seq}{before}", highlight=False)
    console.print(f"  ref: {str(store.uri).rstrip('/')}/{version.name}:{version.seq}", highlight=False, soft_wrap=True)
    if wandb:
        from imgcls.bundle import load_bundle
        from imgcls.store.lineage import log_reference_artifact
        from imgcls.wandb_run import resolve_mode

        mode = resolve_mode(fallback="offline")  # a key (WANDB_API_KEY, `wandb login`) means online
        lineage = load_bundle(bundle, verify=False).meta.lineage.to_dict()
        logged = log_reference_artifact(store, result, lineage=lineage, mode=mode, project=wandb_project)
        console.print(
            f"  W&B ({logged['mode']}): artifact {logged['artifact']} in run {logged['run']}", highlight=False
        )
    elif any(m.alias != "latest" for m in result.aliases):
        from imgcls.cli.models import update_wandb_aliases

        update_wandb_aliases(store, result.aliases)
