"""The typed schema of ``bundle.json`` (pydantic v2). See :mod:`imgcls.bundle` for how to add a section."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from imgcls.errors import BundleError
from imgcls.text import class_name_problem, printable

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
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)):  # json reads NaN, Infinity, 1e999
            raise BundleError(
                f"input.mean/std must be finite numbers, got {self.mean} / {self.std}",
                hint="the manifest was modified or is corrupt: the values are the training data's statistics",
            )
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
    per_class_top1: dict[str, float | None] | None = Field(
        default=None, description="top-1 per class on the evaluated split (null: the split has no image of the class)"
    )
    best_epoch: int | None = Field(default=None, description="epoch whose weights the bundle holds")
    epochs: int | None = Field(default=None, description="epochs run")
    val_top1_flip_tta: float | None = Field(
        default=None, description="top-1 on the validation split with flip test-time augmentation (`train.flip_tta`)"
    )
    test_top1_flip_tta: float | None = Field(
        default=None, description="the same on the test split; reported beside the served model's figures"
    )

    def top1(self) -> float | None:
        """Top-1 of the final evaluation, whatever split it ran on."""
        return self.test_top1 if self.eval_split in (None, "test") else self.split_metric("top1")

    def split_metric(self, what: str) -> float | None:
        """``<eval_split>_<what>`` (e.g. ``val_top1``), None when absent."""
        value = getattr(self, f"{self.eval_split or 'test'}_{what}", None)
        return None if value is None else float(value)


class DatasetLineage(Section):
    """The dataset the model was trained on."""

    name: str | None = Field(default=None, description="dataset name (`digits`, `folder:/path`, ...)")
    fingerprint: str | None = Field(default=None, description="sha256 over the dataset's files and split")
    classes: int | None = Field(default=None, description="number of classes")
    images: dict[str, int] | None = Field(default=None, description="images per split")
    native_size: list[int] | None = Field(default=None, description="(height, width) of the source images")
    skipped_files: int | None = Field(default=None, description="files the loader could not read")


class DistributedLineage(Section):
    """How a distributed run was laid out (``imgcls train --nproc-per-node``; world size 1 for a single process)."""

    world_size: int = Field(default=1, description="processes that trained the model")
    backend: str | None = Field(default=None, description="`nccl` (GPUs) or `gloo` (CPU); None for one process")
    batch_per_process: int | None = Field(default=None, description="batch size of each process")
    global_batch: int | None = Field(default=None, description="batch_per_process × world_size")
    lr_scaling: str | None = Field(default=None, description="learning-rate scaling rule (`linear`, `sqrt`, `none`)")
    base_lr: float | None = Field(default=None, description="the configured learning rate")
    lr: float | None = Field(default=None, description="the peak learning rate after scaling")
    sync_bn: bool | None = Field(default=None, description="BatchNorm synchronised across processes")


class TrainingLineage(Section):
    """How the training run went."""

    distributed: DistributedLineage | None = Field(default=None, description="the process layout of the run")
    device: str | None = Field(default=None, description="`cpu`, `cuda`, `cuda:N`")
    epochs_run: int | None = Field(default=None, description="epochs run (early stopping may end sooner)")
    best_epoch: int | None = Field(default=None, description="the epoch whose weights were kept")
    global_steps: int | None = Field(default=None, description="optimiser steps")
    stopped_early: bool | None = Field(default=None, description="early stopping ended the run")
    seconds: float | None = Field(default=None, description="wall time of the training loop")
    seed: int | None = Field(default=None, description="`train.seed`")


class Lineage(Section):
    """Where the model came from. Extra keys (``wandb``, ...) are kept."""

    imgcls_version: str | None = Field(default=None, description="imgcls that trained it")
    torch_version: str | None = Field(default=None, description="torch that trained it")
    python_version: str | None = Field(default=None, description="Python that trained it")
    git_commit: str | None = Field(default=None, description="git commit of the working directory, when there was one")
    created_at: str | None = Field(default=None, description="ISO 8601, UTC")
    dataset: DatasetLineage | None = Field(default=None, description="the training data")
    config: dict[str, Any] | None = Field(default=None, description="the full training config")
    training: TrainingLineage | None = Field(default=None, description="the training run")


class ExportedModel(Section):
    """One ONNX precision in the bundle, with the gate figures it passed."""

    file: str = Field(description="bundle-relative path of the ONNX file")
    val_top1: float | None = Field(default=None, description="top-1 of the ONNX model on the validation images")
    parity: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="batch -> `max_abs_logit_diff`, `top1_agreement` against torch"
    )
    tolerance: dict[str, Any] = Field(default_factory=dict, description="the gate limits this model passed")
    top1_drop_points: float | None = Field(default=None, description="int8: top-1 points lost against fp32")
    fp32_val_top1: float | None = Field(default=None, description="int8: the fp32 model's validation top-1")
    quantization: dict[str, Any] | None = Field(default=None, description="int8: how it was quantized")
    embedding_parity: dict[str, Any] | None = Field(default=None, description="the drift embedding against torch")
    checked_on: str | None = Field(default=None, description="fp16: the provider the gate ran on")

    def gate_problems(self, precision: str) -> list[str]:
        """The gates this model's recorded figures fail (empty: it passed every gate it has figures for)."""
        problems = []
        limit, agree = self.tolerance.get("max_abs_logit_diff"), self.tolerance.get("min_top1_agreement")
        for where, got in self.parity.items():
            if limit is not None and got.get("max_abs_logit_diff", 0.0) > limit:
                problems.append(f"its {precision} export failed the parity gate at {where}")
            elif agree is not None and got.get("top1_agreement", 1.0) < agree:
                problems.append(f"its {precision} export failed the top-1 agreement gate at {where}")
        allowed = self.tolerance.get("max_top1_drop_points")
        if self.top1_drop_points is not None and allowed is not None and self.top1_drop_points > allowed:
            problems.append(
                f"its {precision} model lost {self.top1_drop_points:g} top-1 points (≤ {allowed:g} allowed)"
            )
        return problems


class ExportSection(Section):
    """Written by ``imgcls export``: one entry per precision in ``models``."""

    exporter: str | None = Field(default=None, description="the exporter (`torch.onnx.export(dynamo=True)`)")
    opset: int | None = Field(default=None, description="ONNX opset of the graphs")
    torch_version: str | None = Field(default=None, description="torch that exported them")
    onnx_version: str | None = Field(default=None, description="onnx that exported them")
    onnxruntime_version: str | None = Field(default=None, description="onnxruntime that ran the gates")
    input_name: str = Field(default="images", description="ONNX input name")
    output_name: str = Field(default="logits", description="ONNX output name")
    embedding_output: str | None = Field(
        default=None,
        description="ONNX output with the drift embedding (PCA components), when the bundle has a reference",
    )
    dynamic_batch: bool | None = Field(default=None, description="the batch dimension is dynamic")
    weights_sha256: str | None = Field(default=None, description="sha256 of the weights exported")
    checked_on: dict[str, Any] | None = Field(default=None, description="what the gates ran on")
    created_at: str | None = Field(default=None, description="ISO 8601, UTC")
    models: dict[str, ExportedModel] = Field(default_factory=dict, description="precision -> exported model")


class DriftColumn(Section):
    """One compared column: image statistic, model output or embedding component."""

    name: str = Field(description="column of the reference and of the prediction log")
    method: str = Field(description="the drift test used on it")


class DriftEmbedding(Section):
    """The PCA projection of the penultimate features that the exported graphs compute."""

    k: int = Field(description="PCA components of the penultimate features")
    features: int | None = Field(default=None, description="width of the penultimate features")
    onnx_output: str = Field(default="embedding", description="output of the exported graphs carrying them")
    fitted_on: str | None = Field(default=None, description="the images the PCA was fitted on")
    explained_variance_ratio: list[float] = Field(default_factory=list, description="per component")


class DriftCalibration(Section):
    """Temperature scaling fitted on the reference images, for the label-free accuracy estimate."""

    method: str | None = Field(default=None, description="how the confidence calibration was fitted")
    temperature: float = Field(description="softmax temperature for the label-free accuracy estimate")
    nll_before: float | None = Field(default=None, description="NLL of the reference at T = 1")
    nll_after: float | None = Field(default=None, description="NLL of the reference at the fitted T")
    reference_accuracy: float = Field(description="top-1 on the reference images")
    estimated_accuracy: float = Field(description="mean calibrated confidence on them")


class DriftThresholds(Section):
    """Per-column thresholds calibrated by resampling the reference against itself (docs/drift.md)."""

    rule: str | None = Field(default=None, description="how columns combine into one verdict")
    family_alpha: float | None = Field(default=None, description="target false-alarm rate per report")
    column_alpha: float | None = Field(default=None, description="per-column level that gives family_alpha")
    windows: list[int] = Field(description="window sizes the reference was resampled in")
    draws: int | None = Field(default=None, description="resampled windows per size")
    threshold: str | None = Field(default=None, description="how a constant becomes a threshold for n rows")
    constants: dict[str, float] = Field(description="column -> threshold constant c")


class DriftSection(Section):
    """Written by ``imgcls train`` / ``imgcls drift reference``: what ``imgcls drift report`` compares against."""

    file: str = Field(default="drift/reference.npz", description="the reference arrays (no pickle)")
    images: int = Field(description="reference images (a class-stratified random sample)")
    seed: int = Field(default=0, description="seed of the sample and the resampling")
    source: str | None = Field(default=None, description="the held-out images it was drawn from")
    sample: str | None = Field(default=None, description="how the sample was drawn")
    columns: list[DriftColumn] = Field(description="the compared columns")
    outputs_from: str | None = Field(default=None, description="which model computed the reference's outputs")
    embedding: DriftEmbedding = Field(description="the embedding projection")
    calibration: DriftCalibration = Field(description="the confidence calibration")
    thresholds: DriftThresholds = Field(description="false alarms calibrated by resampling the reference")


class ServingProfile(Section):
    """Written by ``imgcls bench --pick``: how to serve this bundle on the machine it was measured on."""

    # plain strings, checked where used: a profile naming an engine a newer imgcls added must not make the
    # whole bundle unreadable here (``imgcls.runtime.profile.serving_profile`` ignores it with a warning)
    engine: str = Field(description="the inference engine: `onnxruntime` or `openvino`")
    precision: str = Field(description="the precision run: `fp32`, `bf16`, `int8` or `fp16`")
    threads: int | None = Field(default=None, ge=1, description="inference threads; None: the engine's default")
    max_batch: int | None = Field(
        default=None, ge=1, le=1024, description="batcher's largest batch (`--slo-p99-ms`); None: the default"
    )
    max_delay_ms: float | None = Field(
        default=None, ge=0.0, description="batcher's longest wait for a batch to fill (`--slo-p99-ms`)"
    )
    machine: dict[str, Any] = Field(
        default_factory=dict, description="`cpu` (model name) and `isa` (flags) of the machine measured on"
    )
    measured: dict[str, Any] = Field(
        default_factory=dict, description="figures behind the choice (img/s, batch, p99, the accuracy gate)"
    )
    created: str = Field(default="", description="when the profile was measured (ISO 8601)")


class BundleMeta(Section):
    """``bundle.json``: the whole manifest.

    ``files`` maps every bundle-relative path to its sha256; it is filled in by
    :func:`imgcls.bundle.write_manifest`, never by hand.
    """

    format: str = Field(description="`imgcls.bundle/MAJOR.MINOR`")
    name: str = Field(description="the model's name")
    classes: list[str] = Field(
        description="class names, index = class id: unique, 1 to 1,000 characters, no control characters"
    )
    input: InputSpec = Field(description="the input transform")
    model: ModelSection = Field(description="the architecture")
    metrics: Metrics = Field(default_factory=lambda: Metrics(), description="accuracy figures")
    lineage: Lineage = Field(default_factory=lambda: Lineage(), description="provenance")
    export: ExportSection | None = Field(default=None, description="ONNX models (after `imgcls export`)")
    drift: DriftSection | None = Field(default=None, description="the drift reference (`imgcls drift reference`)")
    serving: ServingProfile | None = Field(default=None, description="the serving profile (`imgcls bench --pick`)")
    files: dict[str, str] = Field(default_factory=dict, description="relative path -> sha256 of every file")

    @field_validator("classes")
    @classmethod
    def _check_classes(cls, classes: list[str]) -> list[str]:
        # A label is how predict, serve, the drift report and the store name a class: one that is empty or named
        # twice makes a prediction ambiguous (two ids print as one name, per-class counts merge).
        if not classes:
            raise BundleError("bundle.json lists no classes", hint="the manifest was modified or is corrupt")
        if any(not name for name in classes):
            raise BundleError("bundle.json lists an empty class name", hint="every class needs a name")
        for i, name in enumerate(classes):
            if problem := class_name_problem(name):
                raise BundleError(
                    f"bundle.json's class {i} ({printable(name[:60])!r}{'…' if len(name) > 60 else ''}) {problem}",
                    hint="rename the class in bundle.json (its name goes into every prediction), then re-export",
                )
        seen: dict[str, int] = {}
        for i, name in enumerate(classes):
            if name in seen:
                raise BundleError(
                    f"bundle.json names class {seen[name]} and class {i} both {printable(name)!r}",
                    hint="class names must be unique: rename one in bundle.json (and re-export)",
                )
            seen[name] = i
        return classes

    @model_validator(mode="after")
    def _classes_fit_the_model(self) -> BundleMeta:
        # A model of N outputs with another number of names exported without a word, and predict then asked for a
        # re-export that could never fix it: the names and the classifier are one contract.
        n = self.model.num_classes
        if n is not None and n != len(self.classes):
            raise BundleError(
                f"bundle.json lists {len(self.classes)} classes, but its model has {n} outputs (model.num_classes)",
                hint="the manifest was edited or is corrupt: pull or re-train the bundle",
            )
        return self
