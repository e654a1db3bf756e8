"""Measure engines in process (--model) or a running server over HTTP (--url); --pick stores the fastest gated engine.

In process: every engine × precision is first checked against fp32 onnxruntime on the bundle's real samples;
one that fails is shown with its failure and never picked. Exit codes: 0 done, 1 a regression against
--baseline, nothing passed the gate with --pick, or no batching setting met --slo-p99-ms (the bundle is then
left unchanged: no serving profile is written), 2 usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from imgcls.cli._render import styled

if TYPE_CHECKING:
    from rich.text import Text


def _ints(text: str | None, flag: str) -> list[int] | None:
    from imgcls.errors import UsageError

    if text is None:
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",")]  # an empty item ('1,,2') is a typo, not nothing
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected comma-separated integers, e.g. 1,8,64") from None


def _floats(text: str | None, flag: str) -> list[float] | None:
    from imgcls.errors import UsageError

    if text is None:
        return None
    try:
        return [float(x) for x in text.replace(" ", "").split(",")]
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected comma-separated numbers, e.g. 100,200") from None


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [x for x in text.replace(" ", "").split(",") if x]


def bench(
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Bundle directory or store reference to measure in process.", show_default=False
        ),
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="A running server's predict URL to load over HTTP.", show_default=False)
    ] = None,
    image: Annotated[
        Path | None, typer.Option(help="The image every HTTP request uploads.", show_default=False)
    ] = None,
    engine: Annotated[
        str | None, typer.Option(help="Engines, comma-separated (default: every one installed).", show_default=False)
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="Precisions: fp32,bf16,int8,fp16 (default: all the engine runs and the bundle has).",
            show_default=False,
        ),
    ] = None,
    batch: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "1,64",
    threads: Annotated[
        str | None, typer.Option(help="Thread counts, comma-separated (default: the cores here).", show_default=False)
    ] = None,
    timed: Annotated[str, typer.Option(help="What is timed: model, preprocess (+normalise) or decode (+PNG).")] = (
        "model"
    ),
    measure_s: Annotated[float, typer.Option(min=0.05, help="Seconds of timed calls per row after warm-up.")] = 1.0,
    peaks: Annotated[bool, typer.Option(help="Measure GEMM peaks per dtype (a few seconds).")] = True,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the report as JSON here.", show_default=False)
    ] = None,
    chart: Annotated[
        Path | None,
        typer.Option(help="PNG chart (default: beside --json, same name .png).", show_default=False),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(help="A previous --json report: print ratios, exit 1 on a regression.", show_default=False),
    ] = None,
    regression: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Slower than the baseline by more than this fraction fails.")
    ] = 0.10,
    pick: Annotated[
        bool, typer.Option("--pick", help="Write the fastest gated engine/precision/threads into the bundle.")
    ] = False,
    pick_batch: Annotated[
        int | None,
        typer.Option(min=1, help="Batch size the pick optimises (default: the largest).", show_default=False),
    ] = None,
    slo_p99_ms: Annotated[
        float | None,
        typer.Option(
            help="With --pick: sweep max batch × max delay on a temporary server; keep the best whose p99 meets this.",
            show_default=False,
        ),
    ] = None,
    slo_max_batch: Annotated[
        str, typer.Option(help="With --slo-p99-ms: the max batch sizes tried, comma-separated.")
    ] = "1,8,32",
    slo_max_delay_ms: Annotated[
        str, typer.Option(help="With --slo-p99-ms: the max delays tried (ms), comma-separated.")
    ] = "0,2,5",
    slo_seconds: Annotated[
        float, typer.Option(min=0.2, help="With --slo-p99-ms: seconds of load (32 connections) per setting.")
    ] = 5.0,
    concurrency: Annotated[
        str | None, typer.Option(help="--url: closed-loop connection counts, comma-separated.", show_default=False)
    ] = None,
    rate: Annotated[
        str | None, typer.Option(help="--url: open-loop Poisson rates in req/s, comma-separated.", show_default=False)
    ] = None,
    duration_s: Annotated[float, typer.Option(min=0.5, help="--url: seconds per load level.")] = 10.0,
    client: Annotated[str, typer.Option(help="--url: auto (wrk when installed), python (processes) or wrk.")] = (
        "auto"
    ),
    processes: Annotated[
        int | None, typer.Option(min=1, max=64, help="--url: Python client processes.", show_default=False)
    ] = None,
) -> None:
    from imgcls.cli._render import console, err_console
    from imgcls.errors import UsageError
    from imgcls.fsio import check_output

    for path, flag in ((json_path, "--json"), (chart, "--chart")):
        if path is not None:
            check_output(path, flag, folder=False)  # before minutes of measuring, not after
    if (model is None) == (url is None):
        raise UsageError(
            "give exactly one of --model (in process) or --url (a running server)",
            hint="imgcls bench --model runs/digits, or imgcls bench --url http://127.0.0.1:8000/v1/predict "
            "--image cat.png",
        )
    earlier: tuple[Path, dict[str, Any]] | None = None
    if baseline is not None:  # read before measuring too
        from imgcls.bench.report import load_report

        earlier = (baseline, load_report(baseline, kind="inprocess" if url is None else "http"))
    if url is not None:
        if image is None:
            raise UsageError("--url needs --image FILE (the upload every request sends)")
        from imgcls.bench.http import run_http_bench

        report = run_http_bench(
            url,
            image,
            concurrency=_ints(concurrency, "--concurrency"),
            rates=_floats(rate, "--rate"),
            duration_s=duration_s,
            client=client,
            processes=processes,
            on_row=lambda row: err_console.print(_http_line(row), highlight=False, soft_wrap=True),
        )
        console.print(_http_table(report), soft_wrap=True)
        for row in report["results"]:
            for warning in row.get("warnings", []):
                err_console.print(styled("[yellow]warning:[/] {}", warning), highlight=False, soft_wrap=True)
        _finish(report, json_path, None, earlier, regression)
        return

    assert model is not None
    from imgcls.store import is_store_ref

    if pick and is_store_ref(model):
        # a store reference resolves to a pulled copy in the cache: a pick written there is in no stored version
        raise UsageError(
            f"--pick writes the serving profile into a bundle folder, and {model} is not one (a stored version is "
            "immutable)",
            hint=f"imgcls pull {model} --to DIR, imgcls bench --model DIR --pick, then imgcls push DIR (a new "
            "version, with the profile)",
        )
    if pick:
        from imgcls.bundle import check_editable

        check_editable(model, "imgcls bench --pick")  # before minutes of measuring: it failed after them
    slo_grid: tuple[tuple[int, ...], tuple[float, ...]] | None = None
    if slo_p99_ms is not None:
        if not pick:
            raise UsageError("--slo-p99-ms needs --pick (it stores the batching that meets it in the bundle)")
        from imgcls.bench.pick import check_slo_grid

        slo_grid = (
            tuple(_ints(slo_max_batch, "--slo-max-batch") or []),
            tuple(_floats(slo_max_delay_ms, "--slo-max-delay-ms") or []),
        )
        check_slo_grid(slo_p99_ms, *slo_grid)  # before minutes of measuring, not after

    from imgcls.bench.inprocess import BenchConfig, run_bench

    config = BenchConfig(
        engines=_names(engine),
        precisions=_names(precision),
        batches=_ints(batch, "--batch") or [1],
        threads=_ints(threads, "--threads"),
        timed=timed,
        measure_s=measure_s,
        peaks=peaks,
        pick_batch=pick_batch,
    )
    report = run_bench(
        model, config, on_row=lambda row: err_console.print(_row_line(row), highlight=False, soft_wrap=True)
    )
    console.print(_table(report), soft_wrap=True)
    if report["model"]["flops_per_image"] is None:
        err_console.print(styled("[yellow]note:[/] {}", report["model"]["flops_note"]), highlight=False)
    if pick:
        from imgcls.bench.pick import profile_from, slo_sweep, write_pick

        profile = profile_from(report)
        bundle_path = Path(report["model"]["path"])
        if slo_p99_ms is not None and slo_grid is not None:
            import tempfile

            # the upload lives as long as the sweep: a /tmp/imgcls-bench-*/sample.png stayed behind after every one
            with tempfile.TemporaryDirectory(prefix="imgcls-bench-") as tmp:
                best, rows = slo_sweep(
                    bundle_path,
                    profile,
                    _sample_png(bundle_path, Path(tmp) / "sample.png"),
                    slo_p99_ms=slo_p99_ms,
                    duration_s=slo_seconds,
                    batches=slo_grid[0],
                    delays_ms=slo_grid[1],
                    on_row=lambda r: err_console.print(
                        f"  max batch {r['max_batch']:>3}, max delay {r['max_delay_ms']:g} ms: "
                        f"{r['req_per_s']:.0f} req/s, p99 {r['p99_ms']:.1f} ms, {r['errors']} errors"
                        f"{' (meets the SLO)' if r['meets_slo'] else ''}",
                        highlight=False,
                    ),
                )
            report["slo"] = {"p99_ms": slo_p99_ms, "rows": rows, "best": best}
            if best is None:
                from imgcls.errors import GateError

                report["pick"] = None  # nothing was stored
                lowest = min((r["p99_ms"] for r in rows if not r["errors"]), default=None)
                reached = (
                    f"the lowest p99 without errors was {lowest:.1f} ms"
                    if lowest is not None
                    else ("every setting had errors")
                )
                failure = GateError(
                    f"no batching setting met p99 ≤ {slo_p99_ms:g} ms ({reached}); the bundle's serving profile "
                    "was not changed",
                    hint="raise --slo-p99-ms, or run --pick without it to store only the engine",
                )
                import contextlib

                # the report still says what was tried; a --baseline regression (also exit 1) yields to the SLO's
                with contextlib.suppress(typer.Exit):
                    _finish(report, json_path, chart, earlier, regression)
                raise failure
            profile = profile.model_copy(update={"max_batch": best["max_batch"], "max_delay_ms": best["max_delay_ms"]})
        write_pick(bundle_path, profile)
        report["pick"] = {**report["pick"], "max_batch": profile.max_batch, "max_delay_ms": profile.max_delay_ms}
        batching = (
            f", max batch {profile.max_batch}, max delay {profile.max_delay_ms:g} ms"
            if profile.max_batch is not None and profile.max_delay_ms is not None
            else ""
        )
        console.print(
            styled(
                "picked [bold]{} {}[/] × {} threads ({:.0f} img/s at batch {}){} → serving profile of {}",
                profile.engine,
                profile.precision,
                profile.threads,
                report["pick"]["img_per_s"],
                report["pick"]["batch"],
                batching,
                bundle_path,
            ),
            highlight=False,
            soft_wrap=True,
        )
    _finish(report, json_path, chart, earlier, regression)


def _sample_png(bundle_path: Path, out: Path) -> Path:
    """One of the bundle's real samples written to ``out`` as a PNG file (what the SLO sweep uploads)."""
    from PIL import Image

    from imgcls.bundle import load_bundle
    from imgcls.runtime.gate import gate_images

    img = gate_images(load_bundle(bundle_path)).images[0]
    Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(out)
    return out


def _finish(
    report: dict[str, Any],
    json_path: Path | None,
    chart: Path | None,
    earlier: tuple[Path, dict[str, Any]] | None,
    regression: float,
) -> None:
    from imgcls.cli._render import console, err_console

    if json_path is not None:
        from imgcls.bench.report import write_json

        if report.get("kind") != "http":
            from imgcls.bench.report import chart as draw

            written, note = draw(report, chart or json_path.with_suffix(".png"))
            report["chart"] = str(written) if written else None
            err_console.print(note, highlight=False)
        write_json(report, json_path)
        err_console.print(f"report written to {json_path}", highlight=False)
    elif chart is not None and report.get("kind") != "http":
        from imgcls.bench.report import chart as draw

        err_console.print(draw(report, chart)[1], highlight=False)
    if earlier is not None:
        from imgcls.bench.report import compare

        baseline, previous = earlier
        entries = compare(report, previous, regression)
        if not entries:
            err_console.print(
                styled(
                    "[yellow]warning:[/] {}",
                    f"no row of this run was measured in --baseline {baseline} (other engines, precisions, batch "
                    "sizes, threads or load levels): nothing was compared",
                ),
                highlight=False,
                soft_wrap=True,
            )
            return
        console.print(_baseline_table(entries, baseline, regression), soft_wrap=True)
        bad = [e for e in entries if e["regression"]]
        if bad:
            err_console.print(
                styled("[red]{}[/]", f"{len(bad)} regression(s) beyond {regression:.0%} against {baseline}"),
                highlight=False,
            )
            raise typer.Exit(1)


def _fmt(value: Any, spec: str = ".0f") -> str:
    return "–" if value is None else format(value, spec)


def _row_line(row: dict[str, Any]) -> Text | str:
    what = f"{row['engine']} {row['precision']}" + (f" ×{row['threads']}" if row.get("threads") else "")
    if row["status"] != "ok":
        return styled("  {}: [red]{}[/] — {}", what, row["status"].replace("_", " "), row["error"])
    return (
        f"  {what} batch {row['batch']}: {row['img_per_s']:.0f} img/s, p50 {row['p50_ms']:.2f} ms, "
        f"p99 {row['p99_ms']:.2f} ms"
    )


def _table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    m = report["machine"]
    table = Table(
        title=f"{report['model']['bundle']} on {m['cpu']} ({m['cores']} cores; {' '.join(m['isa'])}) — timed: "
        f"{report['timed_means']}; load {m.get('load_average')}",
        title_justify="left",
    )
    for col in (
        "engine",
        "precision",
        "threads",
        "batch",
        "img/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "GFLOP/s",
        "of peak",
        "top-1 agree",
        "max |Δprob|",
        "gate",
    ):
        table.add_column(col, justify="right" if col not in ("engine", "precision", "gate") else "left")
    for r in report["results"]:
        gate = (
            styled("[green]ok[/]")
            if r["status"] == "ok"
            else styled("[red]{}: {}[/]", r["status"].replace("_", " "), r["error"])
        )
        agree = "–" if r["top1_agreement"] is None else f"{r['top1_agreement']:.2%}"
        table.add_row(
            r["engine"],
            r["precision"],
            _fmt(r["threads"], "d"),
            _fmt(r["batch"], "d"),
            _fmt(r["img_per_s"]),
            _fmt(r["p50_ms"], ".2f"),
            _fmt(r["p95_ms"], ".2f"),
            _fmt(r["p99_ms"], ".2f"),
            _fmt(r["max_ms"], ".2f"),
            _fmt(r.get("gflops"), ".0f"),
            _fmt(r.get("peak_fraction"), ".0%"),
            agree,
            _fmt(r["max_abs_prob_diff"], ".1e"),
            gate,
        )
    peaks = report.get("gemm_peaks") or {}
    if peaks:
        table.caption = "GEMM peaks: " + "; ".join(
            f"{k} {_fmt(v.get('gflops'))} GFLOP/s ({v.get('how')})" for k, v in peaks.items()
        )
    return table


def _http_line(row: dict[str, Any]) -> str:
    level = f"{row['concurrency']} connections" if row["mode"] == "closed" else f"{row['rate']:g} req/s offered"
    return (
        f"  {level}: {row['req_per_s']:.0f} req/s, p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, "
        f"{row['errors']} errors [{row['client']}]"
    )


def _http_table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"{report['url']} — {report['method']}", title_justify="left")
    for col in ("load", "client", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors"):
        table.add_column(col, justify="left" if col in ("load", "client", "errors") else "right")
    for r in report["results"]:
        load = f"{r['concurrency']} conn" if r["mode"] == "closed" else f"{r['rate']:g} req/s (Poisson)"
        errors = ", ".join(f"{k}: {v}" for k, v in r["errors_by_status"].items()) or "0"
        table.add_row(
            load,
            r["client"],
            _fmt(r["req_per_s"]),
            _fmt(r["p50_ms"], ".1f"),
            _fmt(r["p95_ms"], ".1f"),
            _fmt(r["p99_ms"], ".1f"),
            _fmt(r["max_ms"], ".1f"),
            errors,
        )
    return table


def _baseline_table(entries: list[dict[str, Any]], baseline: Path, threshold: float) -> Any:
    from rich.table import Table

    table = Table(title=f"against {baseline} (regression: slower by more than {threshold:.0%})", title_justify="left")
    for col in ("row", "now", "baseline", "ratio", ""):
        table.add_column(col)
    for e in entries:
        key = " ".join(f"{k}={v}" for k, v in e["key"].items() if v is not None)
        table.add_row(
            key,
            _fmt(e["current"]),
            _fmt(e["baseline"]),
            f"{e['ratio']:.2f}×",
            styled("[red]regression[/]") if e["regression"] else styled("[green]ok[/]"),
        )
    return table
