"""What this machine can do for imgcls, and what is wrong with it: each finding with the fix.

Every check really exercises the part it names: a CUDA kernel runs through torch (``is_available()`` alone
says nothing about a broken driver), onnxruntime sessions are created with the CUDA and TensorRT providers
and ``get_providers()`` is read back (onnxruntime-gpu *lists* them on any machine and silently falls back to
CPU), OpenVINO is asked for its devices. torch, onnxruntime and OpenVINO are optional and imported only
here, inside the checks; a serving image without torch gets a clean report.

Example:
    report = diagnose(environ=dict(os.environ), home=Path.home())
    report.require(["cuda"])  # raises MissingCapabilityError when CUDA is absent
"""

from __future__ import annotations

import base64
import difflib
import importlib.metadata
import importlib.util
import logging
import platform
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from imgcls.errors import MissingCapabilityError, UsageError

logger = logging.getLogger(__name__)

Status = Literal["ok", "warn", "missing", "fail", "info"]

# A one-node (Relu, opset 13, IR 7) ONNX model, serialized once with onnx.helper so that the check needs
# neither torch nor the onnx package; tests/unit/test_doctor.py rebuilds it with onnx.helper and compares.
TINY_ONNX = base64.b64decode(
    "CAcSDWltZ2Nscy1kb2N0b3I6QAoMCgF4EgF5IgRSZWx1EgZkb2N0b3JaEwoBeBIOCgwIARIICgIIAQoCCARiEwoBeRIOCgwIARIICgIIAQoC"
    "CARCBAoAEA0="
)

# What --require accepts, and what each means.
CAPABILITIES = {
    "cuda": "torch runs a CUDA kernel",
    "torch": "torch is installed (training)",
    "ort-cuda": "onnxruntime's CUDA provider loads",
    "tensorrt": "onnxruntime's TensorRT provider loads",
    "openvino": "OpenVINO is installed and has a CPU/GPU device",
    "avx2": "the CPU has AVX2 + FMA",
    "avx512": "the CPU has AVX-512",
    "vnni": "the CPU has VNNI (AVX512_VNNI or AVX_VNNI): fast int8",
    "amx": "the CPU has AMX (int8/bf16 tiles)",
    "gcs": "google-cloud-storage is installed and credentials (ADC) or an emulator are configured",
    "wandb": "wandb is installed and can run without prompting (a key, or WANDB_MODE=offline)",
    "disk": "at least 2 GiB free in the model cache",
}

LOW_DISK_BYTES = 2 * 1024**3
TORCH_CUDA_FIX = (
    "install the NVIDIA driver (`nvidia-smi` must work) and a CUDA build of torch "
    "(pip install torch --index-url https://download.pytorch.org/whl/cu130); on a machine without a GPU, "
    "train on CPU (no --gpu) and serve with --device cpu"
)


@dataclass
class Check:
    """One finding: what was checked, what it found, and the fix when something is wrong."""

    name: str
    status: Status
    summary: str
    fix: str | None = None
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    provides: list[str] = field(default_factory=list)


@dataclass
class Report:
    """All findings, in the order they were made."""

    checks: list[Check]

    @property
    def capabilities(self) -> set[str]:
        return {c for check in self.checks for c in check.provides}

    def missing(self, required: Iterable[str]) -> list[str]:
        """The required capabilities this machine lacks (names validated against CAPABILITIES)."""
        wanted = required_names(required)
        have = self.capabilities
        return [name for name in wanted if name not in have]

    def require(self, required: Iterable[str]) -> None:
        """Raise MissingCapabilityError naming each missing capability and its fix."""
        missing = self.missing(required)
        if not missing:
            return
        fixes = []
        for name in missing:
            for check in self.checks:
                if check.fix and name in check.details.get("could_provide", []):
                    fixes.append(f"{name}: {check.fix}")
                    break
        raise MissingCapabilityError(
            f"required but missing: {', '.join(f'{m} ({CAPABILITIES[m]})' for m in missing)}",
            hint="; ".join(fixes) or "see the report above",
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "checks": [{k: v for k, v in asdict(c).items() if k != "provides"} for c in self.checks],
            "capabilities": sorted(self.capabilities),
        }


def required_names(required: Iterable[str]) -> list[str]:
    """``--require`` values (each a name or a comma list) -> capability names; UsageError for an unknown name, or a
    value that names none (``--require ,`` required nothing, exit 0). Cheap: the CLI checks them before the report.
    """
    wanted = []
    for item in required:
        names = [r.strip().lower() for r in item.split(",") if r.strip()]
        if not names:
            raise UsageError(f"--require {item!r} names no capability", hint=f"one of: {', '.join(CAPABILITIES)}")
        wanted.extend(names)
    for name in wanted:
        if name not in CAPABILITIES:
            close = difflib.get_close_matches(name, CAPABILITIES, n=1)
            raise UsageError(
                f"--require {name!r} is not a capability imgcls doctor checks"
                + (f"; did you mean {close[0]!r}?" if close else ""),
                hint=f"one of: {', '.join(CAPABILITIES)}",
            )
    return wanted


def diagnose(
    *, environ: Mapping[str, str], home: Path | None, cache_dir: Path | None = None, skip: Iterable[str] = ()
) -> Report:
    """Run every check (onnxruntime before torch, so that torch's CUDA libraries do not flatter onnxruntime).

    Args:
        environ: the environment to judge (the CLI passes ``os.environ``).
        home: the user's home (for ``~/.netrc`` and gcloud's ADC file).
        cache_dir: the cache root whose disk is measured (default: ``$IMGCLS_CACHE`` or ~/.cache/imgcls).
        skip: check names not to run (``torch`` skips the CUDA kernel, which imports torch: ~1.5 s).
    """
    skipped = set(skip)
    checks: list[tuple[str, Callable[[], Check | list[Check]]]] = [
        ("cpu", check_cpu),
        ("onnxruntime", check_onnxruntime),
        ("openvino", check_openvino),
        ("torch", check_torch),
        ("gcs", lambda: check_gcs(environ, home)),
        ("wandb", lambda: check_wandb(environ, home)),
        ("disk", lambda: check_disk(cache_dir or _cache_dir(environ, home))),
        ("versions", check_versions),
    ]
    out: list[Check] = []
    for name, run in checks:
        if name in skipped:
            continue
        try:
            result = run()
        except Exception as exc:  # a check must never take the report down with it
            logger.debug("check %s raised", name, exc_info=True)
            result = Check(name, "fail", f"the check itself failed: {type(exc).__name__}: {exc}")
        out.extend(result if isinstance(result, list) else [result])
    return Report(out)


# --- CPU ---------------------------------------------------------------------------------------------------


def cpu_flags(cpuinfo: str) -> tuple[str, set[str]]:
    """The model name and the flag set of the first processor in a /proc/cpuinfo text."""
    model, flags = "", set[str]()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def isa_of(flags: set[str]) -> list[str]:
    """The ISA extensions that matter for inference, by their usual names."""
    names = [
        ("AVX2", {"avx2", "fma"}),
        ("AVX-512", {"avx512f"}),
        ("AVX512-VNNI", {"avx512_vnni"}),
        ("AVX-VNNI", {"avx_vnni"}),
        ("AVX512-BF16", {"avx512_bf16"}),
        ("AMX-INT8", {"amx_int8"}),
        ("AMX-BF16", {"amx_bf16"}),
    ]
    return [name for name, needed in names if needed <= flags]


def engine_advice(flags: set[str]) -> list[str]:
    """What the ISA means for the choice of engine and precision (figures: docs/benchmarks.md, ENVIRONMENT)."""
    vnni = bool({"avx512_vnni", "avx_vnni"} & flags)
    if "amx_int8" in flags or "amx_bf16" in flags:
        return [
            "AMX: OpenVINO int8 and bf16 run on AMX tiles (measured on Sapphire Rapids, ResNet-18 b64: OpenVINO "
            "int8 3,708 / bf16 1,776 / fp32 327 img/s); onnxruntime's CPU kernels use VNNI but not AMX "
            "(int8 1,108 img/s): prefer OpenVINO int8, then OpenVINO bf16",
            "run `imgcls bench --pick` on this machine to store the measured choice in the bundle",
        ]
    if vnni:
        return [
            "VNNI without AMX: static int8 is the fast path on either engine (measured 3.5× fp32 on Zen 5 with "
            "onnxruntime); bf16 "
            + ("has AVX512-BF16 instructions" if "avx512_bf16" in flags else "is emulated (no gain)"),
            "run `imgcls bench --pick` on this machine to choose between onnxruntime and OpenVINO",
        ]
    if {"avx2", "fma"} <= flags:
        return [
            "AVX2 + FMA only: int8 still helps (~2× fp32 measured on an AVX2-only EPYC), bf16 does not; "
            "expect 3-4× less throughput than an AVX-512/VNNI machine",
        ]
    return ["no AVX2: every engine is slow here; serve fp32 on onnxruntime and expect little from int8"]


def check_cpu(cpuinfo_path: Path = Path("/proc/cpuinfo")) -> Check:
    from imgcls.runtime.machine import cpu_count

    cores = cpu_count()  # the ones this process may use (a container's cpuset), not the host's
    try:
        text = cpuinfo_path.read_text()
    except OSError:
        return Check(
            "cpu",
            "info",
            f"{platform.machine()} {platform.processor()}, {cores} cores (no {cpuinfo_path}: ISA not read)",
        )
    model, flags = cpu_flags(text)
    isa = isa_of(flags)
    provides = []
    if "AVX2" in isa:
        provides.append("avx2")
    if "AVX-512" in isa:
        provides.append("avx512")
    if {"avx512_vnni", "avx_vnni"} & flags:
        provides.append("vnni")
    if {"amx_int8", "amx_bf16"} & flags:
        provides.append("amx")
    return Check(
        "cpu",
        "ok",
        f"{model or platform.machine()}, {cores} cores: {', '.join(isa) or 'no AVX2'}",
        notes=engine_advice(flags),
        details={"model": model, "cores": cores, "isa": isa, "could_provide": ["avx2", "avx512", "vnni", "amx"]},
        provides=provides,
    )


# --- onnxruntime --------------------------------------------------------------------------------------------

CUDA_EP, TRT_EP, CPU_EP = "CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider"


def check_onnxruntime() -> list[Check]:
    if importlib.util.find_spec("onnxruntime") is None:
        return [
            Check(
                "onnxruntime",
                "missing",
                "onnxruntime is not installed: predict, serve and bench cannot run",
                fix="pip install imgcls (it depends on onnxruntime-gpu on Linux x86_64, onnxruntime elsewhere)",
                details={"could_provide": ["ort-cuda", "tensorrt"]},
            )
        ]
    import onnxruntime as ort

    from imgcls.runtime.ort import cuda_driver_loads as _cuda_driver_loads
    from imgcls.runtime.ort import preload_cuda_libraries as _preload_cuda_libraries

    available = ort.get_available_providers()
    dists = [d for d in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino") if _version(d)]
    base = Check(
        "onnxruntime",
        "ok",
        f"onnxruntime {ort.__version__} ({', '.join(dists) or 'unknown wheel'}); CPU sessions load",
        details={"available_providers": available, "distributions": dists},
    )
    if len(dists) > 1:
        base.status = "warn"
        base.summary += f"; {' and '.join(dists)} are both installed and share one module"
        base.fix = f"keep one: pip uninstall -y {' '.join(d for d in dists if d != 'onnxruntime-gpu')}"
    session = _session(ort, [CPU_EP])
    if CPU_EP not in session.get_providers():  # pragma: no cover - a broken wheel
        base.status, base.summary = "fail", f"onnxruntime {ort.__version__} cannot create a CPU session"
        base.fix = "reinstall onnxruntime: pip install --force-reinstall onnxruntime"
    out = [base]
    driver = _cuda_driver_loads()
    for label, provider, cap, chain in (
        ("ort-cuda", CUDA_EP, "ort-cuda", [CUDA_EP, CPU_EP]),
        ("ort-tensorrt", TRT_EP, "tensorrt", [TRT_EP, CUDA_EP, CPU_EP]),
    ):
        check = Check(label, "missing", "", details={"could_provide": [cap]})
        if provider not in available:
            check.summary = f"{provider} is not in this onnxruntime build (providers: {', '.join(available)})"
            check.fix = (
                "pip uninstall -y onnxruntime && pip install onnxruntime-gpu (Linux x86_64, CUDA 12/13 + cuDNN 9)"
            )
        elif not driver:
            check.summary = f"{provider} is listed but cannot load: no NVIDIA driver (libcuda.so.1 does not load)"
            check.fix = "on a GPU machine install the NVIDIA driver (`nvidia-smi` must work); here, serve --device cpu"
        else:
            _preload_cuda_libraries(ort)
            got = _session(ort, chain).get_providers()
            if provider in got:
                check.status, check.summary, check.provides = "ok", f"{provider} loads (session: {got})", [cap]
            else:
                check.summary = f"{provider} is listed and the driver loads, but the session fell back to {got}"
                check.fix = (
                    "the CUDA/cuDNN (or TensorRT) libraries did not load: pip install 'nvidia-cudnn-cu12' or use "
                    "the serve-gpu image, whose base matches onnxruntime-gpu's CUDA major"
                    if provider == CUDA_EP
                    else "install TensorRT (pip install tensorrt) matching onnxruntime-gpu's CUDA major"
                )
        out.append(check)
    return out


def _session(ort: Any, providers: list[str]) -> Any:
    ort.set_default_logger_severity(4)  # a failed provider prints two error lines; the providers list tells
    try:
        return ort.InferenceSession(TINY_ONNX, providers=providers)
    finally:
        ort.set_default_logger_severity(3)


# --- OpenVINO -----------------------------------------------------------------------------------------------


def check_openvino() -> Check:
    if importlib.util.find_spec("openvino") is None:
        return Check(
            "openvino",
            "missing",
            "OpenVINO is not installed (optional: on Intel AMX/VNNI CPUs its int8 and bf16 are the fastest engine)",
            fix="pip install openvino",
            details={"could_provide": ["openvino"]},
        )
    import openvino as ov

    core = ov.Core()
    devices = list(core.available_devices)
    names = {}
    for device in devices:
        try:
            names[device] = str(core.get_property(device, "FULL_DEVICE_NAME"))
        except Exception:  # some plugins do not answer; the device list is what matters
            names[device] = device
    ok = bool(devices)
    return Check(
        "openvino",
        "ok" if ok else "fail",
        f"OpenVINO {ov.get_version().split('-')[0]}: devices {', '.join(f'{d} ({n})' for d, n in names.items())}"
        if ok
        else f"OpenVINO {ov.get_version()} is installed but reports no device",
        fix=None if ok else "reinstall openvino: pip install --force-reinstall openvino",
        details={"devices": names, "could_provide": ["openvino"]},
        provides=["openvino"] if ok else [],
    )


# --- torch / CUDA -------------------------------------------------------------------------------------------


def check_torch() -> list[Check]:
    if importlib.util.find_spec("torch") is None:
        return [
            Check(
                "cuda",
                "missing",
                "CUDA (torch) absent: torch is not installed (serving images do not need it)",
                fix="for training: pip install 'imgcls[train]'; " + TORCH_CUDA_FIX,
                details={"could_provide": ["cuda", "torch"]},
            )
        ]
    import torch

    base = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "could_provide": ["cuda"]}
    if torch.version.cuda is None:
        return [
            Check(
                "cuda",
                "missing",
                f"CUDA absent: torch {torch.__version__} is a CPU-only build",
                fix=TORCH_CUDA_FIX,
                details=base,
                provides=["torch"],
            )
        ]
    if not torch.cuda.is_available():
        from imgcls.runtime.ort import cuda_driver_loads as _cuda_driver_loads

        why = "the driver loads but reports no device" if _cuda_driver_loads() else "no NVIDIA driver (libcuda.so.1)"
        return [
            Check(
                "cuda",
                "missing",
                f"CUDA absent: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU: {why}",
                fix=TORCH_CUDA_FIX,
                details=base,
                provides=["torch"],
            )
        ]
    try:
        a = torch.arange(1024, device="cuda", dtype=torch.float32)
        total = float((a * 2).sum().item())
        torch.cuda.synchronize()
    except Exception as exc:
        return [
            Check(
                "cuda",
                "fail",
                f"CUDA is listed but a kernel failed: {type(exc).__name__}: {str(exc)[:200]}",
                fix="check `nvidia-smi`, the driver version against torch's CUDA "
                f"{torch.version.cuda}, and CUDA_VISIBLE_DEVICES",
                details=base,
                provides=["torch"],
            )
        ]
    expected = float(1023 * 1024)  # 2 * sum(0..1023)
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    cap = torch.cuda.get_device_capability(0)
    good = total == expected
    return [
        Check(
            "cuda",
            "ok" if good else "fail",
            f"torch {torch.__version__} ran a CUDA kernel on {', '.join(gpus)} (sm_{cap[0]}{cap[1]}, "
            f"CUDA {torch.version.cuda}, bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'})"
            if good
            else f"a CUDA kernel returned {total}, not {expected}: the GPU computes wrong results",
            fix=None if good else "check the driver and the GPU (nvidia-smi -q); do not train on it",
            details={**base, "devices": gpus, "capability": list(cap)},
            provides=["torch", "cuda"] if good else ["torch"],
        )
    ]


# --- GCS / W&B / disk ---------------------------------------------------------------------------------------


def check_gcs(environ: Mapping[str, str], home: Path | None) -> Check:
    could = {"could_provide": ["gcs"]}
    if importlib.util.find_spec("google.cloud.storage") is None:
        return Check(
            "gcs",
            "missing",
            "google-cloud-storage is not installed: gs:// stores cannot be used",
            fix="pip install 'imgcls[gcs]'",
            details=could,
        )
    emulator = environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        return Check(
            "gcs",
            "ok",
            f"STORAGE_EMULATOR_HOST={emulator}: gs:// goes to an emulator, anonymously (not Google Cloud)",
            details={**could, "emulator": emulator},
            provides=["gcs"],
        )
    source = _adc_source(environ, home)
    if source is None:
        return Check(
            "gcs",
            "missing",
            "no Google credentials (ADC): gs:// stores will fail",
            fix="`gcloud auth application-default login`, or export GOOGLE_APPLICATION_CREDENTIALS=/path/key.json "
            "(on GCE/GKE/Cloud Run the metadata server is used; in CI use Workload Identity Federation)",
            details=could,
        )
    if source.startswith("missing file"):
        return Check(
            "gcs",
            "fail",
            f"GOOGLE_APPLICATION_CREDENTIALS points at a {source}",
            fix=("fix the path, or unset it to use `gcloud auth application-default login`"),
            details=could,
        )
    project = environ.get("GOOGLE_CLOUD_PROJECT") or environ.get("CLOUDSDK_CORE_PROJECT")
    return Check(
        "gcs",
        "ok",
        f"Google credentials from {source}" + (f", project {project}" if project else ""),
        details={**could, "credentials": source},
        provides=["gcs"],
    )


def _adc_source(environ: Mapping[str, str], home: Path | None) -> str | None:
    """Where Application Default Credentials would come from, found without a network call."""
    explicit = environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if explicit:
        return (
            f"GOOGLE_APPLICATION_CREDENTIALS ({explicit})" if Path(explicit).is_file() else f"missing file {explicit}"
        )
    config = environ.get("CLOUDSDK_CONFIG") or (str(home / ".config" / "gcloud") if home else None)
    if config and (Path(config) / "application_default_credentials.json").is_file():
        return f"gcloud ADC ({Path(config) / 'application_default_credentials.json'})"
    if environ.get("K_SERVICE"):
        return "the metadata server (Cloud Run)"
    if _on_gce():
        return "the metadata server (GCE)"
    return None


def _on_gce() -> bool:
    try:
        return "Google" in Path("/sys/class/dmi/id/product_name").read_text()
    except OSError:
        return False


# what wandb.Settings takes (a typo such as 'ofline' fails wandb.init; the doctor said "no WANDB_MODE")
_WANDB_MODES = ("online", "offline", "disabled", "dryrun", "shared", "run")


def check_wandb(environ: Mapping[str, str], home: Path | None) -> Check:
    could = {"could_provide": ["wandb"]}
    if importlib.util.find_spec("wandb") is None:
        return Check(
            "wandb",
            "missing",
            "wandb is not installed: --wandb is unavailable",
            fix="pip install 'imgcls[monitor]'",
            details=could,
        )
    from imgcls.wandb_run import has_api_key

    mode = environ.get("WANDB_MODE", "").strip().lower() or None
    key = has_api_key(environ, home)
    where = "WANDB_API_KEY" if environ.get("WANDB_API_KEY") else "~/.netrc"
    details = {**could, "mode": mode, "key": where if key else None}  # never the key itself
    if mode is not None and mode not in _WANDB_MODES:
        return Check(
            "wandb",
            "fail",
            f"WANDB_MODE={environ['WANDB_MODE']!r} is not a W&B mode: wandb refuses to start a run "
            f"with it ({', '.join(_WANDB_MODES)})",
            fix="export WANDB_MODE=offline (or online), or unset it",
            details=details,
        )
    if mode in ("offline", "disabled", "dryrun"):
        return Check(
            "wandb",
            "ok",
            f"WANDB_MODE={mode}: runs are written locally (`wandb sync` uploads them later)"
            + (f"; a key is set ({where})" if key else ""),
            details=details,
            provides=["wandb"],
        )
    if key:
        return Check("wandb", "ok", f"W&B online: a key is set ({where})", details=details, provides=["wandb"])
    return Check(
        "wandb",
        "warn",
        "no W&B key (WANDB_API_KEY or ~/.netrc) and no WANDB_MODE: online logging would fail",
        fix="`wandb login` or export WANDB_API_KEY=..., or use --wandb-mode offline / WANDB_MODE=offline",
        details=details,
    )


def _cache_dir(environ: Mapping[str, str], home: Path | None) -> Path:
    """The cache root of :mod:`imgcls.paths` (datasets, pulled models, the prediction log live below it)."""
    from imgcls.paths import CACHE_ENV, cache_root

    if environ.get(CACHE_ENV, "").strip() or home is None:
        return cache_root(environ)
    return home / ".cache" / "imgcls"


def check_disk(cache_dir: Path) -> Check:
    probe = cache_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    free_gib = usage.free / 1024**3
    low = usage.free < LOW_DISK_BYTES
    return Check(
        "disk",
        "warn" if low else "ok",
        f"{free_gib:.1f} GiB free of {usage.total / 1024**3:.1f} GiB for the model cache {cache_dir}",
        fix="free space, or point IMGCLS_CACHE at a larger disk" if low else None,
        details={"cache_dir": str(cache_dir), "free_bytes": usage.free, "could_provide": ["disk"]},
        provides=[] if low else ["disk"],
    )


# --- versions -----------------------------------------------------------------------------------------------

_PACKAGES = (
    "imgcls", "numpy", "pillow", "pydantic", "onnxruntime", "onnxruntime-gpu", "openvino", "torch",
    "torchvision", "timm", "onnx", "fastapi", "uvicorn", "google-cloud-storage", "wandb", "evidently",
)  # fmt: skip


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_versions() -> Check:
    versions = {"python": platform.python_version()} | {p: v for p in _PACKAGES if (v := _version(p))}
    return Check(
        "versions",
        "info",
        ", ".join(f"{k} {v}" for k, v in versions.items()),
        details={"versions": versions, "platform": sys.platform, "machine": platform.machine()},
    )
