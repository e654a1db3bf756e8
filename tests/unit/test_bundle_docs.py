"""docs/bundle.md is generated from the schema: a schema change without regenerating it fails here."""

from __future__ import annotations

from imgcls.bundle import BundleMeta
from imgcls.bundle import docs as bundle_docs


def test_docs_bundle_md_is_what_the_schema_generates() -> None:
    assert bundle_docs.DOC.is_file(), "docs/bundle.md is missing: run `python -m imgcls.bundle.docs`"
    assert bundle_docs.main(["--check"]) == 0, "docs/bundle.md is stale: run `python -m imgcls.bundle.docs`"


def test_every_section_and_key_is_documented() -> None:
    text = bundle_docs.render()
    for name in ("BundleMeta", "ExportSection", "DriftSection", "ServingProfile", "DistributedLineage"):
        assert name in text
    for key in BundleMeta.model_fields:
        assert f"| `{key}` |" in text
    # no key without a description: a row ending in an empty cell means a field lacks `description=`
    assert not [line for line in text.splitlines() if line.startswith("| `") and line.rstrip().endswith("|  |")]


def test_the_check_fails_when_the_docs_are_stale(tmp_path, monkeypatch) -> None:
    stale = tmp_path / "bundle.md"
    stale.write_text(bundle_docs.render().replace("the model's name", "the model name"), encoding="utf-8")
    monkeypatch.setattr(bundle_docs, "DOC", stale)
    assert bundle_docs.main(["--check"]) == 1
