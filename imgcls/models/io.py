"""Bundle <-> torch model: write a trained model as a bundle, rebuild a model from one (safetensors only)."""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from pathlib import Path
from typing import Any

from imgcls import __version__
from imgcls.bundle import (
    FORMAT,
    WEIGHTS,
    Bundle,
    BundleMeta,
    DriftSection,
    InputSpec,
    Lineage,
    Metrics,
    ModelSection,
    load_bundle,
    write_manifest,
)
from imgcls.deps import require
from imgcls.errors import BundleError, ImgclsError
from imgcls.fsio import atomic_file


def git_commit(cwd: Path | None = None) -> str | None:
    """The current git commit of the working directory, when there is one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment_lineage() -> dict[str, Any]:
    torch = require("torch")
    return {
        "imgcls_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "git_commit": git_commit(),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def save_bundle(
    out: Path,
    *,
    model: Any,
    name: str,
    classes: list[str],
    input_spec: InputSpec,
    model_spec: ModelSection | dict[str, Any],
    metrics: Metrics | dict[str, Any] | None = None,
    lineage: dict[str, Any] | None = None,
    extra_files: list[str] | None = None,
    drift: DriftSection | None = None,
) -> Bundle:
    """Write ``weights.safetensors`` + ``bundle.json`` into ``out`` (other listed files must already be there).

    ``extra_files`` are relative paths inside ``out`` that belong to the bundle (metrics, plots, config, ...);
    ``drift`` is the drift reference's section (its data file among ``extra_files``).
    """
    require("torch")
    safetensors_torch = require("safetensors.torch", feature="saving a bundle")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_file(out / WEIGHTS) as tmp:
        safetensors_torch.save_file(state, str(tmp), metadata={"format": "pt"})
    meta = BundleMeta(
        format=FORMAT,
        name=name,
        classes=list(classes),
        input=input_spec,
        model=model_spec if isinstance(model_spec, ModelSection) else ModelSection.model_validate(model_spec),
        metrics=metrics if isinstance(metrics, Metrics) else Metrics.model_validate(metrics or {}),
        lineage=Lineage.model_validate({**environment_lineage(), **(lineage or {})}),
        drift=drift,
    )
    write_manifest(out, meta, [WEIGHTS, *(extra_files or [])])
    return load_bundle(out)


def load_model(bundle: Bundle | str | Path, device: str = "cpu") -> Any:
    """Rebuild the architecture from the bundle and load its safetensors weights (strict), in eval mode."""

    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    safetensors_torch = require("safetensors.torch", feature="loading weights")
    weights = bundle.file(WEIGHTS)
    section = bundle.meta.model
    if section.arch is None or section.num_classes is None or section.in_chans is None or section.img_size is None:
        raise BundleError(
            f"bundle {bundle.path}: the model section lacks arch / num_classes / in_chans / img_size",
            hint="re-create the bundle with `imgcls train`",
        )
    from safetensors import SafetensorError, safe_open

    fix = "the bundle's model section and weights disagree; re-train or re-pull it"
    try:
        # the file's tensors by their header alone: nothing is allocated for a header that lies
        with safe_open(str(weights), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(
            f"{weights} is not a readable safetensors file ({exc})", hint="the bundle is damaged: re-pull or re-train"
        ) from None
    # The architecture built without memory first (torch's meta device): a model section whose kwargs make another
    # model (width 100000: 1.4 TB) or no model at all is refused before anything is allocated for it
    expected = _state_shapes(bundle.model, section.arch, fix)
    if expected is not None and expected != shapes:
        raise BundleError(
            f"weights in {bundle.path} do not fit architecture {section.arch!r}: {_first_difference(expected, shapes)}",
            hint=fix,
        )
    model = _build(bundle.model, section.arch, fix)
    try:
        state = safetensors_torch.load_file(str(weights), device="cpu")
        missing, unexpected = model.load_state_dict(state, strict=False)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:  # shapes, when the meta build was skipped
        raise BundleError(f"weights in {bundle.path} cannot be loaded ({str(exc)[:300]})", hint=fix) from None
    if missing or unexpected:
        raise BundleError(
            f"weights in {bundle.path} do not match architecture {bundle.meta.model.arch!r} "
            f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)",
            hint=fix,
        )
    return model.to(device).eval()


def _build(spec: dict[str, Any], arch: str | None, fix: str) -> Any:
    """The model of a bundle's model section; BundleError for a section that builds none (an unknown kwarg)."""
    from imgcls.models.registry import model_from_spec

    try:
        return model_from_spec(spec)
    except ImgclsError:
        raise
    except (TypeError, ValueError, RuntimeError, MemoryError) as exc:
        raise BundleError(f"the bundle's model section builds no {arch!r} ({str(exc)[:300]})", hint=fix) from None


def _state_shapes(spec: dict[str, Any], arch: str | None, fix: str) -> dict[str, tuple[int, ...]] | None:
    """The tensor shapes the model section's architecture holds, built on the meta device (no memory); None when
    the architecture cannot be built there (its own initialisation reads values): the real build then decides."""
    import torch

    from imgcls.models.registry import model_from_spec

    try:
        with torch.device("meta"):
            skeleton = model_from_spec(spec)
    except (TypeError, ValueError) as exc:  # no such model: the real build would say the same
        raise BundleError(f"the bundle's model section builds no {arch!r} ({str(exc)[:300]})", hint=fix) from None
    except Exception:  # an initialisation that reads values ('cannot copy out of meta tensor')
        return None
    return {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}


def _first_difference(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> str:
    for key in expected:
        if key not in found:
            return f"the file lacks {key} (and {max(len(set(expected) - set(found)) - 1, 0)} more)"
        if expected[key] != found[key]:
            return f"{key} is {list(found[key])} in the file, {list(expected[key])} in the model"
    extra = sorted(set(found) - set(expected))
    return f"the file holds {extra[0]}, which the model has not (and {len(extra) - 1} more)"
