"""The model bundle: the one contract between train, export, push, serve, predict, drift and bench.

A bundle is a directory marked by ``bundle.json``. The manifest says everything a later step needs
(classes, input transform, architecture, metrics, lineage, exported models) and lists the sha256 of every
file that belongs to the bundle. Loading verifies every hash: a tampered, partial or unknown-format bundle
is refused. ``docs/bundle.md`` describes every key (generated: ``python -m imgcls.bundle.docs``).

The schema (:mod:`imgcls.bundle.schema`) is the ONLY way code reads or writes ``bundle.json``:
``load_bundle(path).meta`` is a :class:`BundleMeta`; writers build one (or edit one in
:func:`edit_bundle`) and :func:`write_manifest` fills in ``files`` and writes it. Nobody outside this
package opens ``bundle.json`` or reads it with ``dict.get``.

Format version (:mod:`imgcls.bundle.version`): ``format`` is ``imgcls.bundle/MAJOR.MINOR``. Older minors
are migrated in memory on load (``MIGRATIONS``); a newer minor loads with a warning; another major is
refused with a hint.

Unknown keys are ALLOWED AND KEPT, at the top level and inside every section. Why: a bundle written by a
newer imgcls (a newer minor) carries sections this version does not know; ``imgcls export`` or a store
copy made by this version must not silently strip them, and loading must not fail on them. Typos cannot
hide behind this in our own code, because our code builds sections through typed models (mypy checks the
field names); only data written by someone else can carry unknown keys, and we keep it verbatim.

Adding an optional typed section (drift reference, serving profile, ...) -- one step, no format break:
1. In ``schema.py`` write a pydantic model derived from :class:`~imgcls.bundle.schema.Section`
   (e.g. ``class DriftSection(Section): reference: str = Field(description=...)``), every field with a
   ``description`` (the docs are generated from it).
2. Add an OPTIONAL field to :class:`BundleMeta`: ``drift: DriftSection | None = Field(None, description=...)``.
   Old bundles simply have ``None``; writers set it (``edit.meta.drift = DriftSection(...)`` in
   :func:`edit_bundle`).
3. Data too large for JSON goes in a file of the bundle named by the section (e.g. ``drift/reference.npz``)
   and listed in ``files`` (``edit.write(rel, data)``), so it is verified like every other file.
4. Bump ``MINOR`` in ``version.py`` only if old readers would misread the bundle without the section
   (then add a migration from the previous minor, even an identity one); regenerate ``docs/bundle.md``
   (``python -m imgcls.bundle.docs``) and add a test that writes and re-loads the section.

Edits are atomic: :func:`edit_bundle` stages a hard-linked copy beside the bundle, lets the caller add or
replace files (always by writing a new file, never in place), rewrites the manifest and swaps the staging
directory in with one ``renameat2(RENAME_EXCHANGE)`` where the kernel has it (:func:`imgcls.fsio.swap_dirs`).
A reader sees the old bundle or the new one, never a mix; a crash leaves the old bundle intact.
"""

from __future__ import annotations

from imgcls.bundle.core import (
    MANIFEST,
    WEIGHTS,
    Bundle,
    BundleEdit,
    atomic_write_bytes,
    atomic_write_json,
    canonical_json,
    check_editable,
    edit_bundle,
    load_bundle,
    parse_manifest,
    read_manifest,
    replace_dir,
    sha256_bytes,
    sha256_file,
    validate_rel_path,
    verify_files,
    write_manifest,
)
from imgcls.bundle.schema import (
    INTERPOLATIONS,
    BundleMeta,
    DatasetLineage,
    DistributedLineage,
    DriftCalibration,
    DriftColumn,
    DriftEmbedding,
    DriftSection,
    DriftThresholds,
    ExportedModel,
    ExportSection,
    InputSpec,
    Lineage,
    Metrics,
    ModelSection,
    Section,
    ServingProfile,
    TrainingLineage,
)
from imgcls.bundle.version import FORMAT, MAJOR, MINOR, parse_format

__all__ = [
    "FORMAT",
    "INTERPOLATIONS",
    "MAJOR",
    "MANIFEST",
    "MINOR",
    "WEIGHTS",
    "Bundle",
    "BundleEdit",
    "BundleMeta",
    "DatasetLineage",
    "DistributedLineage",
    "DriftCalibration",
    "DriftColumn",
    "DriftEmbedding",
    "DriftSection",
    "DriftThresholds",
    "ExportSection",
    "ExportedModel",
    "InputSpec",
    "Lineage",
    "Metrics",
    "ModelSection",
    "Section",
    "ServingProfile",
    "TrainingLineage",
    "atomic_write_bytes",
    "atomic_write_json",
    "canonical_json",
    "check_editable",
    "edit_bundle",
    "load_bundle",
    "parse_format",
    "parse_manifest",
    "read_manifest",
    "replace_dir",
    "sha256_bytes",
    "sha256_file",
    "validate_rel_path",
    "verify_files",
    "write_manifest",
]
