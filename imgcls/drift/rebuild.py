"""``imgcls drift reference BUNDLE``: (re)make the drift reference of an existing bundle, then re-export it.

Kept apart from :mod:`imgcls.drift.reference` (which ``imgcls train`` uses) because it runs ``imgcls export``:
the training room may not import the export room.

Example:
    section = add_reference("runs/fashion", data="fashion-mnist")
"""

from __future__ import annotations

from pathlib import Path

from imgcls.bundle import DriftSection, load_bundle
from imgcls.drift.reference import DEFAULT_IMAGES, DEFAULT_K, REFERENCE_FILE, build_reference
from imgcls.errors import UsageError


def add_reference(
    bundle_dir: str | Path,
    *,
    data: str | None = None,
    data_dir: str | Path | None = None,
    size: int = DEFAULT_IMAGES,
    seed: int = 0,
    k: int = DEFAULT_K,
) -> DriftSection:
    """Make (or replace) the drift reference of an existing bundle, then re-export its ONNX models so they carry
    the embedding output. Returns the new section.

    Args:
        bundle_dir: the bundle.
        data: the dataset name (as ``imgcls train --data``; default: the one in the bundle's lineage).
        data_dir: where datasets live.

    Raises:
        UsageError: the dataset is not at hand, or its images do not fit the bundle.
    """
    from imgcls.bundle import check_editable, edit_bundle
    from imgcls.config import DataConfig
    from imgcls.data.datasets import load_dataset
    from imgcls.export import export_bundle, lineage_data
    from imgcls.models.io import load_model

    bundle = load_bundle(bundle_dir)
    check_editable(bundle.path, "imgcls drift reference")  # before the reference is built, not after
    found = lineage_data(bundle.meta.lineage)
    cfg_data, data_seed = found if found is not None else ({}, 0)
    if data is not None:
        cfg_data = {**({} if cfg_data.get("name") != data else cfg_data), "name": data}
    if data_dir is not None:
        cfg_data["dir"] = str(data_dir)
    if not cfg_data.get("name"):
        raise UsageError(f"bundle {bundle.path} does not record its dataset", hint="name it with --data DATASET")
    cfg_data["img_size"] = bundle.input.size[0]
    try:
        ds = load_dataset(DataConfig.model_validate({**cfg_data, "download": False}), seed=data_seed)
    except ValueError as exc:
        raise UsageError(f"--data {cfg_data['name']}: {exc}") from None
    if ds.input.size != bundle.input.size or ds.input.channels != bundle.input.channels:
        raise UsageError(
            f"dataset {ds.name} gives {ds.input.channels}×{ds.input.size} images; {bundle.path} takes "
            f"{bundle.input.channels}×{bundle.input.size}"
        )
    model = load_model(bundle)
    section, blob = build_reference(
        model,
        bundle.input,
        ds.val.images,
        ds.val.labels,
        pca_images=ds.train.images,
        size=size,
        seed=seed,
        k=k,
        source=f"dataset {ds.name} (val split)",
    )
    with edit_bundle(bundle.path) as edit:
        edit.write(REFERENCE_FILE, blob)
        edit.meta.drift = section
    exported = bundle.meta.export.models if bundle.meta.export is not None else {}
    if exported:
        export_bundle(bundle.path, int8="int8" in exported, fp16="fp16" in exported)
    return section
