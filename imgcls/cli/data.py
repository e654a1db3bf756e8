"""Look at a dataset before training: classes, splits, imbalance, image sizes, mean/std, charts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from imgcls.cli._render import console, styled

if TYPE_CHECKING:  # describe imports numpy and Pillow: only on use, not for --help
    from imgcls.data.describe import Description

app = typer.Typer(
    help="Inspect datasets: classes, images per class and split, sizes, per-channel mean/std.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

MAX_ROWS = 40  # class rows shown on screen; describe.json has them all


@app.command("describe")
def describe(
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            "-d",
            help="digits, mnist, fashion-mnist, cifar10, cifar100 or folder:PATH (one sub-folder per class).",
            show_default=False,
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Where named datasets live (default: ~/.cache/imgcls/data).",
            show_default=False,
        ),
    ] = None,
    img_size: Annotated[
        int | None,
        typer.Option("--img-size", help="Model input size in pixels (default: the dataset's).", show_default=False),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder (default: runs/describe-<data>).", show_default=False),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="A run config YAML (its data: section is used).", show_default=False),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", min=0, help="Split seed (default: the config's).")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key, e.g. --set data.val_fraction=0.2 (repeatable)."),
    ] = None,
) -> None:
    """Classes, images per class and split, imbalance, native sizes and mean/std: a table, describe.json and charts.

    Writes describe.json, class_distribution.png and samples.png into --out.
    """
    from imgcls.config import load_config
    from imgcls.data.describe import describe_dataset
    from imgcls.fsio import check_output

    cfg = load_config(config, set_, {"data.name": data, "data.dir": data_dir, "data.img_size": img_size})
    if out is not None:
        check_output(out, "--out", folder=True)
    d = describe_dataset(cfg.data, out, seed=cfg.train.seed if seed is None else seed)
    _render(d)


def _render(d: Description) -> None:
    from rich.table import Table

    totals = d.split_totals()
    table = Table(title=f"{d.data} — {len(d.classes)} classes", title_justify="left")
    table.add_column("class", overflow="fold")
    for split in ("train", "val", "test") if d.has_test else ("train", "val"):
        table.add_column(split, justify="right")
    table.add_column("total", justify="right")
    for c in d.classes[:MAX_ROWS]:
        cells = [str(c.train), str(c.val)] + ([str(c.test)] if d.has_test else [])
        table.add_row(c.name, *cells, str(c.total))
    if len(d.classes) > MAX_ROWS:
        table.add_row(f"… {len(d.classes) - MAX_ROWS} more (see describe.json)", *[""] * (len(table.columns) - 1))
    split_cells = [str(totals["train"]), str(totals["val"])] + ([str(totals["test"])] if d.has_test else [])
    table.add_row(styled("[bold]all[/]"), *split_cells, str(sum(c.total for c in d.classes)), end_section=True)
    console.print(table)

    sizes = ", ".join(f"{w}×{h} ({n:,})" for h, w, n in d.native_sizes[:5])
    if len(d.native_sizes) > 5:
        sizes += f", … {len(d.native_sizes) - 5} more"
    imbalance = f"{d.imbalance_ratio:g}×" if d.imbalance_ratio is not None else "n/a (a class has no train images)"
    rows = [
        ("imbalance", f"{imbalance} (max/min images per class, train split)"),
        ("native sizes", f"{sizes} (W×H, images)"),
        ("model input", f"{d.input_size[1]}×{d.input_size[0]}, {d.channels} channel(s), {d.interpolation}"),
        ("mean", ", ".join(f"{m:.4f}" for m in d.mean)),
        ("std", ", ".join(f"{s:.4f}" for s in d.std)),
        ("fingerprint", d.fingerprint[:16]),
    ]
    if d.skipped:
        rows.append(("skipped", f"{len(d.skipped)} unreadable file(s), listed in describe.json"))
    summary = Table(show_header=False, box=None, pad_edge=False)
    summary.add_column(style="bold")
    summary.add_column()
    for key, value in rows:
        summary.add_row(key, value)
    console.print(summary)
    console.print(f"wrote {', '.join(str(p) for p in d.files.values())}", highlight=False, soft_wrap=True)
