"""imgcls bench in process on a hand-built bundle (no torch): both engines, the accuracy gate and its failure path,
the serving profile and engine="auto", the report's JSON schema and --baseline's exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from imgcls.bench.inprocess import BenchConfig, run_bench
from imgcls.bundle import InputSpec, load_bundle, write_manifest
from imgcls.errors import DeviceError, UsageError
from imgcls.runtime import Predictor
from imgcls.runtime.profile import ServingProfile, serving_profile, write_serving_profile

ROOT = Path(__file__).resolve().parents[2]
SPEC = InputSpec(size=(6, 5), channels=3, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))
CLASSES = ["cat", "dog", "bird", "fish"]
FAST = {"window_s": 0.01, "measure_s": 0.02, "max_warmup_windows": 3, "peaks": False}


def conv_model(seed: int, batch: int | str = "batch") -> onnx.ModelProto:
    """images (N, 3, 6, 5) -> Conv 3x3 -> Relu -> Flatten -> Gemm -> logits (N, 4): a net with countable FLOPs."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.normal(0, 0.3, (8 * 4 * 3, 4)).astype(np.float32), "fc")
    b = numpy_helper.from_array(rng.normal(0, 0.1, (4,)).astype(np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["images", "w"], ["c"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc", "b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 6, 5])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 4])],
        initializer=[w, fc, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    helper.set_model_props(model, {"classes": json.dumps(CLASSES)})
    onnx.checker.check_model(model)
    return model


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """fp32 = the model; int8 = a DIFFERENT model (a deliberately broken precision); 48 sample images."""
    root = tmp_path / "b"
    (root / "samples").mkdir(parents=True)
    (root / "model.onnx").write_bytes(conv_model(0).SerializeToString())
    (root / "model.int8.onnx").write_bytes(conv_model(7).SerializeToString())
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (48, 6, 5, 3), dtype=np.uint8)
    np.savez(root / "samples" / "val.npz", images=images, labels=rng.integers(0, 4, 48))
    meta = {"name": "handmade", "classes": CLASSES, "input": SPEC.to_dict(), "model": {"arch": "handmade"}}
    write_manifest(root, meta, ["model.onnx", "model.int8.onnx", "samples/val.npz"])
    return root


def test_both_engines_are_timed_and_the_broken_precision_fails_its_gate(bundle: Path) -> None:
    config = BenchConfig(engines=["onnxruntime", "openvino"], precisions=["fp32", "int8"], batches=[1, 4],
                         threads=[1], **FAST)  # fmt: skip
    report = run_bench(bundle, config)
    rows = {(r["engine"], r["precision"], r["batch"]): r for r in report["results"]}
    for engine in ("onnxruntime", "openvino"):
        for batch in (1, 4):
            ok = rows[(engine, "fp32", batch)]
            assert ok["status"] == "ok" and ok["img_per_s"] > 0 and ok["threads"] == 1
            assert ok["top1_agreement"] == 1.0 and ok["max_abs_prob_diff"] <= 1e-3
            assert ok["p50_ms"] <= ok["p95_ms"] <= ok["p99_ms"] <= ok["max_ms"]
            assert ok["gflops"] > 0  # FLOPs counted from the graph
        broken = rows[(engine, "int8", None)]  # one row, no batch, no speed
        assert broken["status"] == "failed_gate" and broken["img_per_s"] is None
        assert "top-1 agreement" in broken["error"]
    assert rows[("openvino", "fp32", 1)]["provider"] == "OpenVINO:CPU:f32"  # the precision really run
    assert report["pick"]["precision"] == "fp32" and report["pick"]["batch"] == 4  # never the failing int8
    # conv 8×(4×3) outputs × 27 MACs + gemm 96×4 MACs, 2 FLOPs each
    assert report["model"]["flops_per_image"] == 2 * (8 * 4 * 3 * 27 + 96 * 4)
    assert report["machine"]["cpu"] and isinstance(report["machine"]["isa"], list)
    assert {"onnxruntime:CPUExecutionProvider", "openvino:OpenVINO:CPU:f32"} <= set(report["machine"]["providers_used"])


@pytest.mark.parametrize("timed", ["model", "preprocess", "decode"])
def test_a_model_with_a_static_batch_of_one_is_timed_at_every_batch_size(bundle: Path, timed: str) -> None:
    """Some exporters fix the batch at 1. predict and serve run such a model image by image; bench's "model"
    timing called the engine with the whole batch and died of onnxruntime's 'invalid dimensions' (exit 1)."""
    (bundle / "model.onnx").write_bytes(conv_model(0, batch=1).SerializeToString())
    (bundle / "model.int8.onnx").unlink()
    meta = {"name": "static", "classes": CLASSES, "input": SPEC.to_dict(), "model": {"arch": "handmade"}}
    write_manifest(bundle, meta, ["model.onnx", "samples/val.npz"])
    config = BenchConfig(engines=["onnxruntime", "openvino"], precisions=["fp32"], batches=[1, 4], threads=[1],
                         timed=timed, **FAST)  # fmt: skip
    rows = run_bench(bundle, config)["results"]
    assert [(r["engine"], r["batch"], r["status"]) for r in rows] == [
        ("onnxruntime", 1, "ok"), ("onnxruntime", 4, "ok"), ("openvino", 1, "ok"), ("openvino", 4, "ok")
    ], rows  # fmt: skip
    assert all(r["img_per_s"] > 0 for r in rows)


def test_openvino_matches_onnxruntime_and_bf16_says_what_runs(bundle: Path) -> None:
    import openvino as ov

    x = np.random.default_rng(1).integers(0, 256, (5, 6, 5, 3), dtype=np.uint8)
    ref = Predictor.from_bundle(bundle, engine="onnxruntime", device="cpu").infer_prepared(x)
    vino = Predictor.from_bundle(bundle, engine="openvino", precision="fp32")
    assert vino.describe()["engine"] == "openvino"
    np.testing.assert_allclose(vino.infer_prepared(x), ref, atol=1e-5)
    assert set(vino.outputs(vino.to_input(x))) == {"logits"}  # every output by name
    if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        assert Predictor.from_bundle(bundle, engine="openvino", precision="bf16").provider == "OpenVINO:CPU:bf16"
    else:
        with pytest.raises(DeviceError, match="no bf16"):
            Predictor.from_bundle(bundle, engine="openvino", precision="bf16")


def test_bad_engine_precision_combinations_are_refused(bundle: Path) -> None:
    with pytest.raises(UsageError, match="onnxruntime does not run bf16"):
        Predictor.from_bundle(bundle, engine="onnxruntime", precision="bf16")
    with pytest.raises(UsageError, match="unknown engine"):
        Predictor.from_bundle(bundle, engine="tvm")
    with pytest.raises(UsageError, match="--device cuda needs --engine onnxruntime"):
        Predictor.from_bundle(bundle, engine="openvino", device="cuda")


def test_auto_follows_the_serving_profile_unless_overridden(bundle: Path) -> None:
    assert Predictor.from_bundle(bundle, engine="auto").engine.name == "onnxruntime"  # no profile yet
    write_serving_profile(bundle, ServingProfile(engine="openvino", precision="fp32", threads=1, max_batch=8))
    assert serving_profile(load_bundle(bundle)) is not None  # the bundle still verifies after the edit
    auto = Predictor.from_bundle(bundle, engine="auto")
    assert (auto.engine.name, auto.precision, auto.engine.threads) == ("openvino", "fp32", 1)
    assert auto.choice_reason.startswith("serving profile")
    other = Predictor.from_bundle(bundle, engine="auto", precision="int8")  # another precision: not the profile
    assert (other.engine.name, other.precision) == ("onnxruntime", "int8")
    assert Predictor.from_bundle(bundle, engine="onnxruntime").engine.name == "onnxruntime"


def test_bench_cli_json_schema_pick_and_baseline_exit(bundle: Path, tmp_path: Path) -> None:
    from imgcls.cli import app

    out = tmp_path / "r.json"
    args = ["bench", "--model", str(bundle), "--engine", "onnxruntime,openvino", "--precision", "fp32,int8",
            "--batch", "2", "--threads", "1", "--measure-s", "0.05", "--no-peaks"]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--json", str(out), "--pick"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert {"cpu", "isa"} <= set(report["machine"]) and isinstance(report["machine"]["isa"], list)
    keys = {"engine", "precision", "batch", "threads", "img_per_s", "p50_ms", "p99_ms", "top1_agreement"}
    assert report["results"] and all(keys <= set(r) for r in report["results"])
    assert {"engine", "precision", "threads"} <= set(report["pick"])
    assert report["timed"] == "model"
    assert (tmp_path / "r.png").stat().st_size > 0  # the chart beside the JSON
    profile = serving_profile(load_bundle(bundle))
    assert profile is not None and (profile.engine, profile.precision) == (report["pick"]["engine"], "fp32")

    slow = {**report, "results": [{**r, "img_per_s": r["img_per_s"] and 1.0} for r in report["results"]]}
    fast = {**report, "results": [{**r, "img_per_s": r["img_per_s"] and 1e12} for r in report["results"]]}
    (tmp_path / "slow.json").write_text(json.dumps(slow))
    (tmp_path / "fast.json").write_text(json.dumps(fast))
    assert CliRunner().invoke(app, [*args, "--baseline", str(tmp_path / "slow.json")]).exit_code == 0
    regressed = CliRunner().invoke(app, [*args, "--baseline", str(tmp_path / "fast.json")])
    assert regressed.exit_code == 1 and "regression" in regressed.output


def test_bench_without_samples_says_how_to_get_them(tmp_path: Path) -> None:
    root = tmp_path / "nosamples"
    root.mkdir()
    (root / "model.onnx").write_bytes(conv_model(0).SerializeToString())
    write_manifest(root, {"name": "n", "classes": CLASSES, "input": SPEC.to_dict(), "model": {}}, ["model.onnx"])
    with pytest.raises(UsageError, match="no real sample images"):
        run_bench(root, BenchConfig(**FAST))


def test_bench_never_imports_torch(bundle: Path) -> None:
    code = (
        "import sys\nfrom imgcls.bench.inprocess import BenchConfig, run_bench\n"
        f"run_bench({str(bundle)!r}, BenchConfig(batches=[1], threads=[1], window_s=0.01, measure_s=0.01, "
        "max_warmup_windows=2, peaks=False))\n"
        "assert 'torch' not in sys.modules, 'bench imported torch'\nprint('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_the_pick_is_never_slower_than_onnxruntime_int8_whatever_the_cpu() -> None:
    """The AVX2 case (issue 12): where OpenVINO is slower than onnxruntime int8, the pick is onnxruntime int8;
    a faster row that failed the accuracy gate is never picked; the pick optimises the largest batch."""
    from imgcls.bench.inprocess import pick

    def row(engine: str, precision: str, batch: int, img_s: float, status: str = "ok") -> dict:
        return {"engine": engine, "precision": precision, "threads": 2, "batch": batch, "img_per_s": img_s,
                "p99_ms": 1.0, "top1_agreement": 1.0, "max_abs_prob_diff": 0.0, "status": status}  # fmt: skip

    avx2 = {"results": [row("onnxruntime", "fp32", 64, 120.0), row("onnxruntime", "int8", 64, 250.0),
                        row("openvino", "int8", 64, 230.0), row("openvino", "bf16", 64, 900.0, "gate_failed"),
                        row("openvino", "int8", 1, 5000.0)]}  # fmt: skip
    chosen = pick(avx2)
    assert chosen is not None
    assert (chosen["engine"], chosen["precision"], chosen["batch"]) == ("onnxruntime", "int8", 64)
    amx = {"results": [*avx2["results"][:2], row("openvino", "int8", 64, 2800.0)]}
    best = pick(amx)
    assert best is not None and best["engine"] == "openvino" and best["img_per_s"] >= 250.0
    assert pick({"results": [row("openvino", "bf16", 64, 900.0, "gate_failed")]}) is None


def test_a_report_path_that_could_not_be_written_is_refused_before_measuring(bundle: Path, tmp_path: Path) -> None:
    from imgcls.cli import app
    from imgcls.errors import UsageError

    (tmp_path / "notes").write_text("a file")
    for flag, path, said in [("--json", tmp_path / "notes" / "r.json", "notes is a file, not a folder"),
                             ("--json", tmp_path, "is a folder"),
                             ("--chart", tmp_path / "notes" / "c.png", "notes is a file, not a folder")]:  # fmt: skip
        result = CliRunner().invoke(app, ["bench", "--model", str(bundle), flag, str(path)])
        assert isinstance(result.exception, UsageError), result.output  # the CLI prints it, exit 2
        assert f"{flag} {path}" in result.exception.message and said in result.exception.message
        assert "GEMM" not in result.output and not list(tmp_path.glob("*.png"))  # nothing measured or drawn


def test_bad_flags_and_baselines_are_refused_before_measuring(bundle: Path, tmp_path: Path) -> None:
    from imgcls.cli import app
    from imgcls.runtime.machine import cpu_count

    (tmp_path / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (tmp_path / "http.json").write_text(json.dumps({"kind": "http", "results": []}))
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)  # an unexpected RecursionError before
    args = ["bench", "--model", str(bundle), "--engine", "onnxruntime", "--precision", "fp32", "--no-peaks"]
    for extra, said in [
        (["--threads", str(cpu_count() + 1)], f"may use {cpu_count()} core(s)"),
        (["--batch", "1,4", "--pick", "--pick-batch", "7"], "--pick-batch 7 is not one of the batch sizes measured"),
        (["--baseline", str(tmp_path / "picture.png")], "cannot read it"),
        (["--baseline", str(tmp_path / "deep.json")], "cannot read it"),
        (["--baseline", str(tmp_path / "http.json")], "is a report measured over HTTP (bench --url)"),
        (["--batch", "100000000"], "the most a batch may hold here is 4,096 images"),  # was a MemoryError, exit 1
        (["--batch", "1,,2"], "expected comma-separated integers"),  # the empty item was dropped without a word
    ]:
        result = CliRunner().invoke(app, [*args, *extra])
        assert isinstance(result.exception, UsageError), result.output  # the CLI prints it, exit 2
        assert said in result.exception.message
        assert "onnxruntime" not in result.output  # no row was measured
    assert serving_profile(load_bundle(bundle)) is None  # nothing picked


def test_a_baseline_with_no_row_in_common_says_nothing_was_compared(bundle: Path, tmp_path: Path) -> None:
    from imgcls.cli import app

    args = ["bench", "--model", str(bundle), "--engine", "onnxruntime", "--precision", "fp32", "--no-peaks",
            "--threads", "1", "--measure-s", "0.05"]  # fmt: skip
    assert CliRunner().invoke(app, [*args, "--batch", "2", "--json", str(tmp_path / "b2.json")]).exit_code == 0
    result = CliRunner().invoke(app, [*args, "--batch", "3", "--baseline", str(tmp_path / "b2.json")])
    assert result.exit_code == 0, result.output
    assert "nothing was compared" in result.output


def test_the_table_is_whole_in_a_pipe(bundle: Path) -> None:
    """rich cuts output that is not a terminal to 80 columns: bench's 14-column table came out as ``on… fp…``."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    done = subprocess.run(
        [sys.executable, "-m", "imgcls", "bench", "--model", str(bundle), "--engine", "onnxruntime", "--precision",
         "fp32", "--batch", "2", "--threads", "1", "--measure-s", "0.05", "--no-peaks"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "…" not in done.stdout
    header = next(line for line in done.stdout.splitlines() if "engine" in line and "precision" in line)
    assert all(name in header for name in ("img/s", "p99 ms", "top-1 agree", "max |Δprob|", "gate"))
    assert any("onnxruntime" in line and "fp32" in line and "ok" in line for line in done.stdout.splitlines())


def test_a_load_client_process_that_dies_ends_the_run_with_a_message() -> None:
    """It waited for the dead process's result until its deadline (minutes), then raised queue.Empty."""
    import multiprocessing as mp

    from imgcls.bench.http import _collect
    from imgcls.errors import ImgclsError

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=os._exit, args=(3,))]
    procs[0].start()
    with pytest.raises(ImgclsError, match=r"a load client process died \(exit 3\); no figures were taken"):
        _collect(ctx.Queue(), procs, deadline=float("inf"))


def test_pick_refuses_a_store_reference_whose_versions_are_immutable(bundle: Path, tmp_path: Path) -> None:
    """The pick went into the pulled copy in the cache, which no stored version holds, and was reported as done."""
    from imgcls.cli import app
    from imgcls.store import Store

    Store.open(tmp_path / "store").push(bundle, name="handmade")
    ref = f"{tmp_path / 'store'}/handmade@latest"
    result = CliRunner().invoke(app, ["bench", "--model", ref, "--pick", "--no-peaks"])
    assert isinstance(result.exception, UsageError), result.output
    assert "a stored version is immutable" in result.exception.message
    assert f"imgcls pull {ref} --to DIR" in (result.exception.hint or "")
    assert "onnxruntime" not in result.output  # refused before measuring
