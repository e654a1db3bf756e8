"""The in-process sweep: engines × precisions × batch sizes × threads on one bundle, each gated before timed.

Every engine × precision first passes the accuracy gate (:mod:`imgcls.runtime.gate`) against fp32 onnxruntime on
the bundle's real samples; one that fails gets a row with its failure and no speed, and is never picked.
What is timed is stated in the report (``timed``):

* ``model``: the engine call alone, on the normalised float32 batch (``Engine.run``);
* ``preprocess``: + normalisation from uint8 HWC and the softmax (``Predictor.infer_prepared``);
* ``decode``: + decoding PNG files and resizing (the bundle's samples, re-encoded losslessly), one by one.

Example:
    report = run_bench("runs/cifar-resnet18", BenchConfig(batches=[1, 64], threads=[2]))
    report["pick"]  # {"engine": "openvino", "precision": "int8", "threads": 2, ...}
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgcls.bench.timing import measure
from imgcls.errors import ImgclsError, UsageError
from imgcls.runtime.engines import ENGINE_PRECISIONS, engine_available
from imgcls.runtime.gate import GateResult, gate_images, judge, probabilities
from imgcls.runtime.machine import cpu_count
from imgcls.runtime.onnxfile import SOURCE_PRECISION, load_model_bytes, model_file_for

logger = logging.getLogger(__name__)

# The largest batch a sweep measures: a 224×224 RGB batch of it is 2.4 GB of float32 input already.
MAX_BATCH = 4096

TIMED = {
    "model": "the engine call only, on a normalised float32 batch",
    "preprocess": "normalisation from uint8 HWC + the engine call + softmax",
    "decode": "PNG decoding + resizing + normalisation + the engine call + softmax",
}
# the GEMM peak a precision is compared with
PEAK_DTYPE = {"fp32": "fp32", "fp16": "fp32", "bf16": "bf16", "int8": "int8"}
SCHEMA = "imgcls.bench/1"


@dataclass
class BenchConfig:
    """What to sweep. None: everything this machine and bundle offer."""

    engines: list[str] | None = None
    precisions: list[str] | None = None
    batches: list[int] = field(default_factory=lambda: [1, 64])
    threads: list[int] | None = None
    """Inference threads to try; None: the cores this process may use."""
    timed: str = "model"
    window_s: float = 0.25
    """Warm-up window; warm-up ends when three windows agree within 10 %."""
    measure_s: float = 1.0
    """Timed calls after the warm-up, at least this long."""
    max_warmup_windows: int = 20
    peaks: bool = True
    """Measure GEMM peaks (a few seconds) to report how far from the limit each row runs."""
    pick_batch: int | None = None
    """The batch size the pick optimises (default: the largest swept)."""

    def check(self) -> None:
        if self.timed not in TIMED:
            raise UsageError(f"--timed {self.timed!r} is not one of {', '.join(TIMED)}")
        if not self.batches or min(self.batches) < 1:
            raise UsageError(f"batch sizes must be at least 1, got {self.batches}")
        if max(self.batches) > MAX_BATCH:  # 10^8 was 'unexpected MemoryError' allocating 23.8 GiB of input
            raise UsageError(
                f"--batch {max(self.batches):,}: the most a batch may hold here is {MAX_BATCH:,} images",
                hint="engines peak well below that (docs/benchmarks.md): try --batch 1,8,64,256",
            )
        if self.threads is not None and (not self.threads or min(self.threads) < 1):
            raise UsageError(f"thread counts must be at least 1, got {self.threads}")
        cores = cpu_count()
        if self.threads is not None and max(self.threads) > cores:
            # more threads than cores only take turns on them: 999 onnxruntime threads on 2 cores ran for minutes
            raise UsageError(
                f"--threads {max(self.threads)}: this process may use {cores} core(s); more threads than cores "
                "only contend for them",
                hint=f"use thread counts from 1 to {cores}",
            )
        if self.pick_batch is not None and self.pick_batch not in self.batches:
            raise UsageError(
                f"--pick-batch {self.pick_batch} is not one of the batch sizes measured ({_listed(self.batches)})",
                hint=f"add it to --batch, e.g. --batch {_listed(sorted({*self.batches, self.pick_batch}))}",
            )
        for engine in self.engines or []:
            if engine not in ENGINE_PRECISIONS:
                raise UsageError(f"unknown engine {engine!r}", hint=f"use {', '.join(ENGINE_PRECISIONS)}")
        for precision in self.precisions or []:
            if precision not in SOURCE_PRECISION:
                raise UsageError(f"unknown precision {precision!r}", hint=f"use {', '.join(SOURCE_PRECISION)}")


def _listed(values: list[int]) -> str:
    return ",".join(map(str, values))


def candidates(bundle: Any, config: BenchConfig) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """``([(engine, precision)] to run, [rows for what cannot run here and why])``."""
    todo: list[tuple[str, str]] = []
    skipped: list[dict[str, Any]] = []
    for engine in config.engines or list(ENGINE_PRECISIONS):
        for precision in ENGINE_PRECISIONS[engine]:
            if config.precisions and precision not in config.precisions:
                continue
            if not engine_available(engine):
                if config.engines:  # asked for by name: say why it did not run
                    skipped.append(
                        _row(
                            engine,
                            precision,
                            status="unavailable",
                            error=f"{engine} is not installed (pip install 'imgcls[{engine}]')",
                        )
                    )
                continue
            try:
                model_file_for(bundle, precision)
            except ImgclsError as exc:
                if config.precisions:
                    skipped.append(_row(engine, precision, status="unavailable", error=exc.message))
                continue
            todo.append((engine, precision))
    return todo, skipped


def _row(engine: str, precision: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "engine": engine,
        "precision": precision,
        "batch": None,
        "threads": None,
        "status": "ok",
        "img_per_s": None,
        "p50_ms": None,
        "p95_ms": None,
        "p99_ms": None,
        "max_ms": None,
        "top1_agreement": None,
        "max_abs_prob_diff": None,
        "provider": None,
        "error": None,
    }
    row.update(values)
    return row


def _png_bytes(images: np.ndarray) -> list[bytes]:
    from PIL import Image

    out = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _tile(images: np.ndarray, n: int) -> np.ndarray:
    reps = -(-n // len(images))
    return np.concatenate([images] * reps)[:n] if reps > 1 else images[:n]


def _timed_call(predictor: Any, images_u8: np.ndarray, pngs: list[bytes], batch: int, timed: str) -> Callable[[], Any]:
    batch_u8 = np.ascontiguousarray(_tile(images_u8, batch))
    if timed == "model":
        x = np.ascontiguousarray(predictor.to_input(batch_u8), dtype=np.float32)
        run = predictor.run_engine  # not engine.run: a model with a static batch of 1 runs image by image
        return lambda: run(x)
    if timed == "preprocess":
        return lambda: predictor.infer_prepared(batch_u8)
    files = (pngs * (-(-batch // len(pngs))))[:batch]

    def decode_and_run() -> Any:
        return predictor.infer_prepared(np.stack([predictor.prepare(predictor.decode(b)) for b in files]))

    return decode_and_run


def run_bench(
    model: str | Path, config: BenchConfig | None = None, *, on_row: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Gate and time every engine × precision × batch × threads; the report as a JSON-ready dict.

    Raises:
        UsageError: a bad configuration, a bundle without samples for the gate.
        BundleError: a missing or tampered bundle.
    """
    from imgcls.bench.machine import machine_record
    from imgcls.bundle import load_bundle
    from imgcls.runtime import Predictor, resolve_model

    config = config or BenchConfig()
    config.check()
    started = time.time()
    bundle = load_bundle(resolve_model(model))
    gate_set = gate_images(bundle)
    threads_list = config.threads or [cpu_count()]
    emit = on_row or (lambda row: None)
    reference = Predictor.from_bundle(bundle, engine="onnxruntime", device="cpu", precision="fp32")
    ref_probs = probabilities(reference, gate_set.images)
    pngs = _png_bytes(gate_set.images[:64]) if config.timed == "decode" else []

    flops_per_image, flops_note = None, "FLOPs not counted"
    try:
        from imgcls.bench.roofline import count_flops

        flops_per_image, flops_note = count_flops(load_model_bytes(bundle, "fp32")[1])
    except ImgclsError as exc:
        flops_note = f"FLOPs not counted: {exc.message}"

    todo, rows = candidates(bundle, config)
    for row in rows:
        emit(row)
    gates: list[dict[str, Any]] = []
    providers: set[str] = set()
    for engine, precision in todo:
        gate: GateResult | None = None
        for threads in threads_list:
            try:
                predictor = Predictor.from_bundle(
                    bundle, engine=engine, device="cpu", precision=precision, intra_threads=threads
                )
            except ImgclsError as exc:
                row = _row(engine, precision, threads=threads, status="error", error=exc.message)
                rows.append(row)
                emit(row)
                continue
            providers.add(f"{engine}:{predictor.provider}")
            if gate is None:
                gate = judge(
                    probabilities(predictor, gate_set.images),
                    ref_probs,
                    gate_set.labels,
                    engine=engine,
                    precision=precision,
                    provider=predictor.provider,
                    source=gate_set.source,
                )
                gates.append(gate.to_dict())
            common = {
                "threads": threads,
                "provider": predictor.provider,
                "top1_agreement": gate.top1_agreement,
                "max_abs_prob_diff": gate.max_abs_prob_diff,
            }
            if not gate.passed:
                row = _row(engine, precision, status="failed_gate", error=gate.reason, **common)
                rows.append(row)
                emit(row)
                break  # no speed for an engine that fails the gate, at any thread count
            for batch in config.batches:
                fn = _timed_call(predictor, gate_set.images, pngs, batch, config.timed)
                t = measure(
                    fn,
                    items_per_call=batch,
                    window_s=config.window_s,
                    measure_s=config.measure_s,
                    max_warmup_windows=config.max_warmup_windows,
                )
                row = _row(
                    engine,
                    precision,
                    batch=batch,
                    img_per_s=t.items_per_s,
                    p50_ms=t.p50_ms,
                    p95_ms=t.p95_ms,
                    p99_ms=t.p99_ms,
                    max_ms=t.max_ms,
                    mean_ms=t.mean_ms,
                    calls=t.calls,
                    warmup_windows=t.warmup_windows,
                    stable=t.stable,
                    **common,
                )
                if flops_per_image:
                    row["gflops"] = t.items_per_s * flops_per_image / 1e9
                rows.append(row)
                emit(row)
            del predictor

    peaks: dict[str, Any] = {}
    if config.peaks:
        from imgcls.bench.roofline import gemm_peaks

        peaks = gemm_peaks(max(threads_list))
        for row in rows:
            peak = (peaks.get(PEAK_DTYPE.get(row["precision"], "fp32")) or {}).get("gflops")
            if row.get("gflops") and peak:
                row["peak_fraction"] = row["gflops"] / peak

    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "model": {
            "bundle": bundle.name,
            "path": str(bundle.path),
            "digest": bundle.digest,
            "flops_per_image": flops_per_image,
            "flops_note": flops_note,
        },
        "timed": config.timed,
        "timed_means": TIMED[config.timed],
        "method": f"warm-up in {config.window_s:g} s windows until three agree within 10 % (at most "
        f"{config.max_warmup_windows}), then every call timed for ≥ {config.measure_s:g} s; percentiles unclipped",
        "machine": {**machine_record(), "providers_used": sorted(providers)},
        "gemm_peaks": peaks,
        "gate": {
            "reference": "onnxruntime fp32 (CPUExecutionProvider)",
            "images": len(gate_set.images),
            "source": gate_set.source,
            "results": gates,
        },
        "results": rows,
    }
    report["pick"] = pick(report, config.pick_batch)
    return report


def pick(report: dict[str, Any], batch: int | None = None) -> dict[str, Any] | None:
    """The fastest row that passed the gate at ``batch`` (default: the largest batch measured), or None."""
    ok = [r for r in report["results"] if r["status"] == "ok" and r["img_per_s"]]
    if not ok:
        return None
    batch = batch or max(r["batch"] for r in ok)
    at = [r for r in ok if r["batch"] == batch]
    if not at:
        return None
    best = max(at, key=lambda r: r["img_per_s"])
    return {
        "engine": best["engine"],
        "precision": best["precision"],
        "threads": best["threads"],
        "batch": batch,
        "img_per_s": best["img_per_s"],
        "p99_ms": best["p99_ms"],
        "top1_agreement": best["top1_agreement"],
        "max_abs_prob_diff": best["max_abs_prob_diff"],
    }
