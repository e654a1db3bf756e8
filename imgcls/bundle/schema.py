"""The typed schema of ``bundle.json`` (pydantic v2). See :mod:`imgcls.bundle` for how to add a section."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from imgcls.errors import BundleError

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


class Section(BaseModel):
    """Base of every section: unknown keys are allowed and kept (see the package docstring for why)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form as written to ``bundle.json`` (only keys that were set, extra keys kept)."""
        return self.model_dump(mode="json", exclude_unset=True, by_alias=True)

    def extra(self, key: str, default: Any = None) -> Any:
        """A key this schema does not declare (kept from the file), or ``default``."""
        return (self.model_extra or {}).get(key, default)


class InputSpec(Section):
    """What the model expects: the evaluation transform is fully determined by this."""

    model_config = ConfigDict(extra="allow", frozen=True)

    size: tuple[int, int] = Field(description="(height, width) in pixels")
    channels: int = Field(description="1 (grayscale) or 3 (RGB)")
    mean: tuple[float, ...] = Field(description="per channel, on the 0..1 scale")
    std: tuple[float, ...] = Field(description="per channel, on the 0..1 scale, positive")
    interpolation: str = Field(default="bilinear", description=f"resize filter: one of {', '.join(INTERPOLATIONS)}")

    @model_validator(mode="after")
    def _check(self) -> InputSpec:
        if self.channels not in (1, 3):
            raise BundleError(f"input.channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise BundleError(f"input.mean/std need {self.channels} values, got {self.mean} / {self.std}")
        if any(s <= 0 for s in self.std):
            raise BundleError(f"input.std must be positive, got {self.std}")
        if self.interpolation not in INTERPOLATIONS:
            raise BundleError(f"input.interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Every field, defaults included (the input spec is always written in full)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        from pydantic import ValidationError

        try:
            return cls.model_validate(d)
        except ValidationError as exc:
            raise BundleError(f"bundle input spec is malformed: {d!r}") from exc


class ModelSection(Section):
    """Everything needed to rebuild the architecture (``imgcls.models.registry.model_spec`` writes it).

    A hand-made ONNX-only bundle (no weights) may leave it empty; it serves, but cannot be re-exported.
    """

    arch: str | None = Field(default=None, description="architecture name in the imgcls or timm registry")
    source: str = Field(default="imgcls", description="`imgcls` (built-in) or `timm`")
    num_classes: int | None = Field(default=None, description="size of the classifier output (always written by train)")
    in_chans: int | None = Field(default=None, description="input channels (always written by train)")
    img_size: int | None = Field(default=None, description="input side in pixels (always written by train)")
    small_input_stem: bool = Field(default=False, description="timm models: stride-1 stem for small inputs")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra constructor arguments (e.g. width)")


class Metrics(Section):
    """Accuracy of the trained model. ``test_*`` keys describe the test split ONLY.

    When a dataset has no test split, the final evaluation runs on the validation split and its figures are
    under ``val_*`` (``eval_split`` says which split was evaluated). Extra keys are kept.
    """

    val_top1: float | None = Field(default=None, description="top-1 on the validation split (best epoch)")
    val_top5: float | None = Field(default=None, description="top-5 on the validation split (best epoch)")
    val_loss: float | None = Field(default=None, description="loss on the validation split (when evaluated last)")
    test_top1: float | None = Field(default=None, description="top-1 on the test split (absent without a test split)")
    test_top5: float | None = Field(default=None, description="top-5 on the test split")
    test_loss: float | None = Field(default=None, description="loss on the test split")
    eval_split: str | None = Field(default=None, description="the split of the final evaluation: `test` or `val`")
    eval_images: int | None = Field(default=None, description="images in the evaluated split")
    per_class_top1: dict[str, float] | None = Field(default=None, description="top-1 per class on the evaluated split")
    best_epoch: int | None = Field(default=None, description="epoch whose weights the bundle holds")
    epochs: int | None = Field(default=None, description="epochs run")

    def top1(self) -> float | None:
        """Top-1 of the final evaluation, whatever split it ran on."""
        return self.test_top1 if self.eval_split in (None, "test") else self.split_metric("top1")

    def split_metric(self, what: str) -> float | None:
        """``<eval_split>_<what>`` (e.g. ``val_top1``), None when absent."""
        value = getattr(self, f"{self.eval_split or 'test'}_{what}", None)
        return None if value is None else float(value)


class DatasetLineage(Section):
    name: str | None = Field(default=None, description="dataset name (`digits`, `folder:/path`, ...)")
    fingerprint: str | None = Field(default=None, description="sha256 over the dataset's files and split")
    classes: int | None = Field(default=None, description="number of classes")
    images: dict[str, int] | None = Field(default=None, description="images per split")
    native_size: list[int] | None = Field(default=None, description="(height, width) of the source images")
    skipped_files: int | None = Field(default=None, description="files the loader could not read")


class TrainingLineage(Section):
    device: str | None = None
    epochs_run: int | None = None
    best_epoch: int | None = None
    global_steps: int | None = None
    stopped_early: bool | None = None
    seconds: float | None = None
    seed: int | None = None


class Lineage(Section):
    """Where the model came from. Extra keys (``wandb``, ...) are kept."""

    imgcls_version: str | None = Field(default=None, description="imgcls that trained it")
    torch_version: str | None = None
    python_version: str | None = None
    git_commit: str | None = Field(default=None, description="git commit of the working directory, when there was one")
    created_at: str | None = Field(default=None, description="ISO 8601, UTC")
    dataset: DatasetLineage | None = None
    config: dict[str, Any] | None = Field(default=None, description="the full training config")
    training: TrainingLineage | None = None


class ExportedModel(Section):
    """One ONNX precision in the bundle; the gate figures it passed are kept as extra keys."""

    file: str = Field(description="bundle-relative path of the ONNX file")
    val_top1: float | None = Field(default=None, description="top-1 of the ONNX model on the validation images")


class ExportSection(Section):
    """Written by ``imgcls export``: one entry per precision in ``models``."""

    exporter: str | None = None
    opset: int | None = None
    torch_version: str | None = None
    onnx_version: str | None = None
    onnxruntime_version: str | None = None
    input_name: str = Field(default="images", description="ONNX input name")
    output_name: str = Field(default="logits", description="ONNX output name")
    embedding_output: str | None = Field(
        default=None, description="ONNX output with the drift embedding (PCA components), when the bundle has a reference"
    )
    dynamic_batch: bool | None = None
    weights_sha256: str | None = Field(default=None, description="sha256 of the weights exported")
    checked_on: dict[str, Any] | None = Field(default=None, description="what the gates ran on")
    created_at: str | None = None
    models: dict[str, ExportedModel] = Field(default_factory=dict, description="precision -> exported model")


class BundleMeta(Section):
    """``bundle.json``: the whole manifest.

    ``files`` maps every bundle-relative path to its sha256; it is filled in by
    :func:`imgcls.bundle.write_manifest`, never by hand.
    """

    format: str = Field(description="`imgcls.bundle/MAJOR.MINOR`")
    name: str = Field(description="the model's name")
    classes: list[str] = Field(description="class names, index = class id")
    input: InputSpec = Field(description="the input transform")
    model: ModelSection = Field(description="the architecture")
    metrics: Metrics = Field(default_factory=lambda: Metrics(), description="accuracy figures")
    lineage: Lineage = Field(default_factory=lambda: Lineage(), description="provenance")
    export: ExportSection | None = Field(default=None, description="ONNX models (after `imgcls export`)")
    files: dict[str, str] = Field(default_factory=dict, description="relative path -> sha256 of every file")
