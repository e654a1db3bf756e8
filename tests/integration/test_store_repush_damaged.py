"""Pushing a bundle again over a damaged stored copy of it never says "already stored" (both backends).

The pull of a version corrupted at rest said "push the bundle again"; the push then found the version by its
digest and answered "already stored ... nothing uploaded" (exit 0), the copy still corrupt. Now the push compares
the stored objects with the bundle: a missing one is uploaded again (create-only), one with other content is
refused with the repair that works, which this test follows to the end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _store_helpers import flip_stored_byte, tree_bytes

from imgcls.bundle import MANIFEST, load_bundle
from imgcls.errors import StoreError
from imgcls.store import Store, parse_ref


def test_a_corrupt_stored_copy_is_reported_and_the_hinted_repair_works(
    store_uri: str, store_bundle: Path, tmp_path: Path, cli
) -> None:
    store = Store.open(store_uri)
    version = store.push(store_bundle, name="digits", aliases=["production"]).version
    flip_stored_byte(store_uri, version.key, "weights.safetensors")
    with pytest.raises(StoreError, match="failed verification") as pulled:
        store.pull(version, tmp_path / "out")
    assert f"remove the folder {version.key} from {store.uri}" in (pulled.value.hint or "")
    with pytest.raises(StoreError, match=r"stored weights\.safetensors differs from the bundle's") as info:
        store.push(store_bundle, name="digits")
    assert info.value.exit_code == 1 and "nothing was changed" in info.value.message
    assert f"remove the folder {version.key} from {store.uri} and push the bundle again" in (info.value.hint or "")
    for rel in [*load_bundle(store_bundle).files, MANIFEST, "version.json"]:  # the folder, object by object
        store.backend.delete(f"{version.key}/{rel}")
    again = store.push(store_bundle, name="digits")
    assert again.created and again.version.seq == 2 and again.version.digest == version.digest
    fixed = store.resolve(parse_ref(f"{store_uri}/digits@production"))  # the alias follows the digest
    assert fixed.seq == 2
    assert tree_bytes(store.pull(fixed, tmp_path / "fixed")) == tree_bytes(store_bundle)
    listed = cli("models", "list", store_uri, "--json")  # as resolved: it listed production→1, a removed number
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)[0]["aliases"] == {"latest": 2, "production": 2}


def test_a_file_missing_from_a_stored_version_is_restored_by_pushing_again(
    store_uri: str, store_bundle: Path, tmp_path: Path, cli
) -> None:
    store = Store.open(store_uri)
    version = store.push(store_bundle, name="digits").version
    store.backend.delete(f"{version.key}/weights.safetensors")
    with pytest.raises(StoreError, match="push the same bundle again to complete it"):
        store.pull(version, tmp_path / "out")
    res = cli("push", str(store_bundle), "--to", store_uri, "--name", "digits")
    assert res.returncode == 0, res.stderr
    assert "already stored: digits version 1" in res.stdout
    assert "restored 1 missing file(s): weights.safetensors" in res.stdout
    assert [v.seq for v in store.versions("digits")] == [1]
    assert tree_bytes(store.pull(version, tmp_path / "out")) == tree_bytes(store_bundle)
    res = cli("push", str(store_bundle), "--to", store_uri, "--name", "digits")
    assert res.returncode == 0 and "nothing uploaded" in res.stdout  # intact now: a no-op again
