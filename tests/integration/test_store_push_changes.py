"""A bundle rewritten while it is being pushed is never committed: a version holds the bytes its manifest lists.

The push verifies the bundle (every sha256) and then reads each file again to upload it; a file rewritten in
between (a training or an export still writing into the folder) used to be committed as it was read then, a
version corrupt from birth, which every later pull refused and pushing the bundle again could not repair (the
same manifest: "already stored").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _store_helpers import tree_bytes

from imgcls.bundle import MANIFEST, load_bundle
from imgcls.errors import BundleError
from imgcls.store import Store, parse_ref


def rewrite_when_the_push_starts(bundle: Path, rel: str, change) -> tuple:
    """A progress callback that rewrites ``bundle/rel`` once, while the first other file is uploading."""
    original = (bundle / rel).read_bytes()
    done: list[str] = []

    def progress(key: str, _done: int, _total: int) -> None:
        if not done and not key.endswith("/" + rel):
            done.append(key)
            (bundle / rel).write_bytes(change(original))

    return progress, original, done


def flip(data: bytes) -> bytes:
    return data[:100] + bytes([data[100] ^ 1]) + data[101:]


def test_a_file_rewritten_during_the_push_is_refused_and_nothing_is_committed(
    store_uri: str, store_bundle: Path, tmp_path: Path
) -> None:
    store = Store.open(store_uri)
    assert sorted(load_bundle(store_bundle).files)[-1] == "weights.safetensors"  # uploaded after the others
    progress, original, done = rewrite_when_the_push_starts(store_bundle, "weights.safetensors", flip)
    with pytest.raises(BundleError, match="changed while it was being pushed") as info:
        store.push(store_bundle, name="digits", aliases=["production"], progress=progress)
    assert done, "the callback never ran"
    assert "weights.safetensors" in info.value.message and "nothing was committed" in info.value.message
    assert store.versions("digits") == [] and store.aliases("digits") == {}
    (store_bundle / "weights.safetensors").write_bytes(original)  # the writer is done: push again
    result = store.push(store_bundle, name="digits")
    assert result.created and result.version.seq == 1
    out = store.pull(store.resolve(parse_ref(f"{store_uri}/digits@latest")), tmp_path / "out")
    assert tree_bytes(out) == tree_bytes(store_bundle)


def test_a_manifest_rewritten_during_the_push_is_refused(store_uri: str, store_bundle: Path) -> None:
    def other_manifest(data: bytes) -> bytes:
        meta = json.loads(data)
        meta["metrics"]["test_top1"] = 0.5
        return json.dumps(meta).encode()

    store = Store.open(store_uri)
    progress, _original, done = rewrite_when_the_push_starts(store_bundle, MANIFEST, other_manifest)
    with pytest.raises(BundleError, match=f"changed while it was being pushed: {MANIFEST}"):
        store.push(store_bundle, name="digits", progress=progress)
    assert done and store.versions("digits") == []
