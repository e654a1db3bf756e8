"""List, inspect and promote stored models: versions, aliases, metrics."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from imgcls.cli._render import console, styled

app = typer.Typer(
    help="List, show and alias the models in a store (folder, file:// or gs://).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

StoreArg = Annotated[str, typer.Argument(help="Store URI: a folder, file:///path or gs://bucket/prefix.")]


@app.command("list")
def list_(
    store_uri: StoreArg,
    name: Annotated[str | None, typer.Argument(help="A model: list its versions.", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the models of a store, or the versions of one model (created time, metrics, aliases)."""
    from rich.table import Table

    from imgcls.cli._transfer import format_metrics, format_size
    from imgcls.store import Store

    store = Store.open(store_uri)
    if name is None:
        rows: list[dict[str, Any]] = []
        for model in store.models():
            versions = store.versions(model)
            aliases = store.aliases(model)
            seq_of = {v.digest: v.seq for v in versions}
            rows.append(
                {
                    "name": model,
                    "versions": len(versions),
                    "latest": versions[-1].seq if versions else None,
                    # by digest, as resolving does: a version re-pushed after a repair has a new number, and
                    # the alias record's own number is then stale (it listed production→1 while serving 2)
                    "aliases": {a.alias: seq_of.get(a.digest, a.seq) for a in aliases.values()},
                }
            )
        if as_json:
            print(json.dumps(rows, indent=2))
            return
        if not rows:
            missing = store.uri.scheme == "file" and not store.uri.path.exists()
            console.print(
                f"no models in {store.uri}"
                + (f" (no store there yet: `imgcls push BUNDLE --to {store.uri}` creates it)" if missing else ""),
                highlight=False,
                soft_wrap=True,
            )
            return
        table = Table(title=f"models in {store.uri}", title_justify="left")
        for col in ("name", "versions", "newest", "aliases"):
            table.add_column(col)
        for row in rows:
            aliases_txt = ", ".join(f"{a}→{s}" for a, s in sorted(row["aliases"].items()))
            table.add_row(row["name"], str(row["versions"]), str(row["latest"] or "-"), aliases_txt)
        console.print(table)
        return

    versions = store.versions(name)
    if not versions:
        raise store.no_model_error(name)
    aliases = store.aliases(name)
    by_digest: dict[str, list[str]] = {}
    for a in aliases.values():
        by_digest.setdefault(a.digest, []).append(a.alias)
    if as_json:
        out = [
            {
                "version": v.seq,
                "id": v.id,
                "digest": v.digest,
                "created": v.created,
                "size": v.size,
                "metrics": v.metrics,
                "aliases": sorted(by_digest.get(v.digest, [])),
            }
            for v in versions
        ]
        print(json.dumps(out, indent=2))
        return
    table = Table(title=f"{name} in {store.uri}", title_justify="left")
    for col in ("version", "id", "created", "size", "metrics", "aliases"):
        table.add_column(col)
    for v in versions:
        table.add_row(
            str(v.seq),
            v.id[:12],
            v.created,
            format_size(v.size),
            format_metrics(v.metrics),
            ", ".join(sorted(by_digest.get(v.digest, []))),
        )
    console.print(table)


@app.command("show")
def show(
    store_uri: StoreArg,
    ref: Annotated[str, typer.Argument(help="NAME, NAME@ALIAS or NAME:VERSION.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the stored bundle.json and version record.")] = False,
) -> None:
    """Show one stored version: classes, input, model, metrics, lineage, files and the aliases on it."""
    from imgcls.cli._transfer import format_size
    from imgcls.store import ModelRef, Store, parse_store_uri
    from imgcls.store.refs import split_selector

    store = Store.open(store_uri)
    model, alias, version_sel = split_selector(ref)
    mref = ModelRef(store=parse_store_uri(store_uri), name=model, alias=alias, version=version_sel)
    if alias is None and version_sel is None:
        mref = ModelRef(store=mref.store, name=model, alias="latest")
    version = store.resolve(mref)
    raw, meta = store.manifest(version)
    on_it = sorted(a.alias for a in store.aliases(model).values() if a.digest == version.digest)
    if as_json:
        record = {
            "version": version.seq,
            "id": version.id,
            "digest": version.digest,
            "created": version.created,
            "aliases": on_it,
        }
        print(json.dumps({"version": record, "bundle": json.loads(raw)}, indent=2))
        return
    spec = meta.input
    console.print(styled("[bold]{}[/] version [bold]{}[/]  ({})", model, version.seq, version.digest), highlight=False)
    lines = [
        f"  store     {store.uri}",
        f"  created   {version.created}",
        f"  aliases   {', '.join(on_it) or '-'}",
        f"  model     {meta.model.arch}",
        f"  input     {list(spec.size)} x{spec.channels} mean={list(spec.mean)} std={list(spec.std)}",
        f"  classes   {len(meta.classes)}: {', '.join(meta.classes[:10])}" + (" …" if len(meta.classes) > 10 else ""),
        f"  metrics   {json.dumps(meta.metrics.to_dict())}",
        f"  lineage   {json.dumps(meta.lineage.to_dict())}",
        "  files",
    ]
    for rel, sha in meta.files.items():
        lines.append(f"    {rel}  {format_size(version.files.get(rel, 0))}  sha256 {sha[:16]}…")
    console.print("\n".join(lines), highlight=False, soft_wrap=True)


@app.command("alias")
def alias_(
    store_uri: StoreArg,
    name: Annotated[str, typer.Argument(help="The model.", show_default=False)],
    version: Annotated[str, typer.Argument(help="Sequence number (3) or digest prefix.", show_default=False)],
    alias: Annotated[str, typer.Argument(help="Alias to move or create (production, staging, …).", show_default=False)],
    require: Annotated[
        list[str] | None,
        typer.Option(
            "--require",
            metavar="METRIC>=X",
            help="Refuse unless the version's own metrics meet this, e.g. test_top1>=0.9 (repeatable).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Skip the promotion gate (a version `imgcls serve` would refuse).")
    ] = False,
    wandb: Annotated[
        bool,
        typer.Option(
            "--wandb/--no-wandb",
            help="When the version was pushed with --wandb, give its W&B artifact the alias too (WANDB_MODE, "
            "else online with an API key, else offline).",
        ),
    ] = True,
) -> None:
    """Point an alias at a version (promote or roll back).

    A version `imgcls serve` would refuse (no ONNX export, a failed export gate) or that misses a --require is
    refused (exit 1) unless --force. Compare-and-swap: exit 3 if someone moved the alias first. A version pushed
    with `--wandb` gets the alias on its W&B artifact as well (run it again to retry a failed W&B update).
    """
    from imgcls.store import Store
    from imgcls.store.promotion import parse_requirements

    requirements = parse_requirements(require or [])
    store = Store.open(store_uri)
    move = store.set_alias(name, alias, version.lstrip(":"), require=requirements, force=force)
    if not move.changed:
        console.print(f"{name}@{alias} already points at version {move.version.seq}", highlight=False)
    elif move.previous is None:
        console.print(f"{name}@{alias} -> version {move.version.seq} (new alias)", highlight=False)
    else:
        console.print(
            f"{name}@{alias} -> version {move.version.seq} (was {move.previous.seq})",
            highlight=False,
        )
    if wandb:
        update_wandb_aliases(store, [move])


def update_wandb_aliases(store: Any, moves: list[Any]) -> None:
    """Give the W&B artifact of a version pushed with ``--wandb`` its moved aliases (a warning if W&B fails: the
    store's alias, the source of truth, has moved either way)."""
    from imgcls.cli._render import err_console
    from imgcls.errors import ImgclsError
    from imgcls.store.lineage import sync_moves

    try:
        logged = sync_moves(store, moves)  # the W&B mode is decided only for a version pushed with --wandb
    except ImgclsError as exc:
        err_console.print(f"warning: W&B not updated: {exc.message}" + (f"\n  hint: {exc.hint}" if exc.hint else ""),
                          highlight=False, soft_wrap=True)  # fmt: skip
        return
    if logged is not None:
        console.print(
            f"  W&B ({logged['mode']}): {logged['artifact']} now has {logged['aliases']} (run {logged['run']})",
            highlight=False,
            soft_wrap=True,
        )
