"""A bundle file whose name no store can hold is refused before the push uploads anything (both backends).

A bundle may list ``samples/100%.png`` (a valid bundle path), but a store key takes no '%' (and GCS no newline):
the push used to upload every file sorted before it, then stop on "refusing unsafe store key ... names and
paths must stay inside the store root", leaving a half-pushed version folder behind.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from imgcls.bundle import load_bundle, read_manifest, write_manifest
from imgcls.errors import BundleError
from imgcls.store import Store


@pytest.mark.parametrize("rel", ["samples/100%.txt", "samples/two\nlines.txt", "a\rb.txt"])
def test_a_file_name_no_store_can_hold_is_refused_before_any_upload(
    store_uri: str, store_bundle: Path, rel: str
) -> None:
    (store_bundle / rel).parent.mkdir(parents=True, exist_ok=True)
    (store_bundle / rel).write_text("a note")
    meta = read_manifest(store_bundle)
    write_manifest(store_bundle, meta, [*meta.files, rel])
    assert rel in load_bundle(store_bundle).files  # a valid bundle
    store = Store.open(store_uri)
    with pytest.raises(BundleError, match="has a file a store cannot hold") as info:
        store.push(store_bundle, name="digits")
    assert repr(rel) in info.value.message and "rename the file" in (info.value.hint or "")
    assert info.value.exit_code == 2
    assert store.backend.list_children("digits") == []  # nothing uploaded
