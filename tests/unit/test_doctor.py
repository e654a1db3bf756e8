"""`imgcls doctor`: it names this machine's ISA, says CUDA is absent with a fix, and --require gates on it."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from imgcls import doctor
from imgcls.errors import MissingCapabilityError, UsageError

SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni avx_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
AVX2_ONLY = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma
"""


def _has_cuda_driver() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imgcls", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def test_the_embedded_onnx_model_is_the_one_onnx_helper_builds() -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "doctor", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="imgcls-doctor")
    model.ir_version = 7
    onnx.checker.check_model(model)
    assert model.SerializeToString() == doctor.TINY_ONNX


def test_isa_names_and_advice_for_known_cpus() -> None:
    model, flags = doctor.cpu_flags(SAPPHIRE_RAPIDS)
    assert model == "Intel(R) Xeon(R) Platinum 8481C"
    assert doctor.isa_of(flags) == [
        "AVX2", "AVX-512", "AVX512-VNNI", "AVX-VNNI", "AVX512-BF16", "AMX-INT8", "AMX-BF16",
    ]  # fmt: skip
    assert "OpenVINO int8" in doctor.engine_advice(flags)[0]
    _, flags = doctor.cpu_flags(AVX2_ONLY)
    assert doctor.isa_of(flags) == ["AVX2"]
    assert doctor.engine_advice(flags)[0].startswith("AVX2 + FMA only")


def test_cpu_check_reads_this_machines_isa(tmp_path: Path) -> None:
    fake = tmp_path / "cpuinfo"
    fake.write_text(AVX2_ONLY)
    check = doctor.check_cpu(fake)
    assert check.provides == ["avx2"]
    assert "AMD EPYC 7B13" in check.summary and "AVX-512" not in check.summary
    missing = doctor.check_cpu(tmp_path / "absent")
    assert missing.status == "info" and missing.provides == []


def test_gcs_credentials_from_emulator_file_or_nothing(tmp_path: Path) -> None:
    pytest.importorskip("google.cloud.storage")
    assert doctor.check_gcs({"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9023"}, tmp_path).provides == ["gcs"]
    none = doctor.check_gcs({}, tmp_path)
    if none.status == "ok":  # pragma: no cover - a GCE machine has the metadata server
        pytest.skip("this machine is on Google Compute Engine")
    assert none.status == "missing" and "gcloud auth application-default login" in (none.fix or "")
    bad = doctor.check_gcs({"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "nope.json")}, tmp_path)
    assert bad.status == "fail" and "nope.json" in bad.summary
    adc = tmp_path / ".config" / "gcloud" / "application_default_credentials.json"
    adc.parent.mkdir(parents=True)
    adc.write_text("{}")
    assert doctor.check_gcs({}, tmp_path).provides == ["gcs"]


def test_wandb_key_is_detected_but_never_shown(tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    check = doctor.check_wandb({"WANDB_API_KEY": "s3cr3t-k3y-0123456789"}, tmp_path)
    assert check.status == "ok" and check.provides == ["wandb"]
    assert "s3cr3t" not in json.dumps(doctor.Report([check]).to_dict())
    offline = doctor.check_wandb({"WANDB_MODE": "offline"}, tmp_path)
    assert offline.provides == ["wandb"]
    nothing = doctor.check_wandb({}, tmp_path)
    assert nothing.status == "warn" and "wandb login" in (nothing.fix or "")


def test_require_validates_names_and_names_the_fix(tmp_path: Path) -> None:
    report = doctor.Report([doctor.check_disk(tmp_path), doctor.check_gcs({}, tmp_path / "nohome")])
    with pytest.raises(UsageError, match="did you mean 'cuda'"):
        report.missing(["cdua"])
    if "gcs" in report.capabilities:  # pragma: no cover - GCE
        pytest.skip("this machine has Google credentials")
    with pytest.raises(MissingCapabilityError, match="gcs") as info:
        report.require(["disk,gcs"])
    assert info.value.exit_code == 2


@pytest.mark.skipif(_has_cuda_driver(), reason="this machine has an NVIDIA driver")
def test_doctor_here_names_the_isa_and_says_cuda_is_absent_with_a_fix() -> None:
    proc = _run("--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    flags = doctor.cpu_flags(Path("/proc/cpuinfo").read_text())[1]
    assert ("AVX-512" in checks["cpu"]["summary"]) == ("avx512f" in flags)
    assert ("AMX-INT8" in checks["cpu"]["summary"]) == ("amx_int8" in flags)
    assert checks["cuda"]["status"] == "missing" and checks["cuda"]["summary"].startswith("CUDA absent")
    assert "NVIDIA driver" in checks["cuda"]["fix"]
    assert checks["onnxruntime"]["status"] in ("ok", "warn")
    assert checks["ort-cuda"]["status"] == "missing" and checks["ort-cuda"]["fix"]
    assert "cuda" not in report["capabilities"]


@pytest.mark.skipif(_has_cuda_driver(), reason="this machine has an NVIDIA driver")
def test_require_cuda_exits_2_and_says_so() -> None:
    proc = _run("--require", "cuda")
    assert proc.returncode == 2
    assert "required but missing: cuda" in proc.stderr
    assert "fix:" in proc.stdout and "Traceback" not in proc.stderr


def test_require_a_present_capability_exits_0_and_a_typo_exits_2() -> None:
    ok = _run("--no-torch", "--require", "disk")
    assert ok.returncode == 0, ok.stderr
    assert "cpu" in ok.stdout and "versions" in ok.stdout
    typo = _run("--no-torch", "--require", "opnevino")
    assert typo.returncode == 2 and "did you mean 'openvino'" in typo.stderr


def test_a_bad_require_is_refused_before_any_check_runs() -> None:
    """`--require bogus` ran every check (torch imported, ~2.4 s) and printed the report before refusing the name;
    `--require ,` required nothing and exited 0."""
    typo = _run("--require", "bogus")
    assert typo.returncode == 2 and "'bogus' is not a capability" in typo.stderr
    assert "cpu" not in typo.stdout  # no report: refused first
    empty = _run("--no-torch", "--require", ",")
    assert empty.returncode == 2 and "--require ',' names no capability" in empty.stderr


@pytest.mark.parametrize("key", [{}, {"WANDB_API_KEY": "s3cr3t-k3y-0123456789"}], ids=["no-key", "key"])
def test_a_wandb_mode_wandb_does_not_know_is_named_as_the_problem(tmp_path: Path, key: dict[str, str]) -> None:
    """WANDB_MODE=ofline (a typo) fails wandb.init; the doctor said 'no W&B key ... and no WANDB_MODE' (a mode was
    set) or, with a key, 'W&B online' and ok."""
    pytest.importorskip("wandb")
    check = doctor.check_wandb({"WANDB_MODE": "ofline", **key}, tmp_path)
    assert check.status == "fail" and check.provides == []
    assert "WANDB_MODE='ofline' is not a W&B mode" in check.summary and "no WANDB_MODE" not in check.summary
    assert "WANDB_MODE=offline" in (check.fix or "")
    for mode in ("offline", "ONLINE ", "disabled", "dryrun"):  # what wandb takes is still fine
        assert doctor.check_wandb({"WANDB_MODE": mode, **key}, tmp_path).status in ("ok", "warn")
