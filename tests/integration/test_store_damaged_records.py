"""A damaged record of the store (an alias, a version's version.json) is reported with its repair, is skipped by
the listings, and can be repaired with the commands the hint names (both backends).

Before, one alias that was not JSON made `models list` fail for the whole store, and `models alias` (even with
--force) failed on it too: there was no way to repair it but by hand; a push whose `latest` was damaged
committed the version and then failed, leaving `latest` behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _store_helpers import variant

from imgcls.errors import StoreError
from imgcls.store import Store, parse_ref


def test_a_damaged_alias_is_skipped_by_listings_and_repaired_by_moving_it(
    store_uri: str, store_bundle: Path, tmp_path: Path, cli
) -> None:
    store = Store.open(store_uri)
    store.push(store_bundle, name="digits", aliases=["production"])
    store.backend.write("digits/aliases/production", b"{not json")  # corrupted at rest, or a bad hand edit
    with pytest.raises(StoreError, match=r"alias digits@production .*is not valid JSON") as info:
        store.resolve(parse_ref(f"{store_uri}/digits@production"))
    assert info.value.exit_code == 1
    assert f"imgcls models alias {store.uri} digits VERSION production" in (info.value.hint or "")
    assert sorted(store.aliases("digits")) == ["latest"]  # the readable ones
    listed = cli("models", "list", store_uri, "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [{"name": "digits", "versions": 1, "latest": 1, "aliases": {"latest": 1}}]
    assert "damaged alias" in listed.stderr and "Traceback" not in listed.stderr
    moved = cli("models", "alias", store_uri, "digits", "1", "production")  # the repair the hint names
    assert moved.returncode == 0, moved.stderr
    assert store.resolve(parse_ref(f"{store_uri}/digits@production")).seq == 1
    assert sorted(store.aliases("digits")) == ["latest", "production"]


def test_a_push_repairs_a_damaged_latest_instead_of_failing_after_the_commit(
    store_uri: str, store_bundle: Path, tmp_path: Path
) -> None:
    store = Store.open(store_uri)
    store.push(variant(store_bundle, tmp_path, 1), name="digits")
    store.backend.write("digits/aliases/latest", b"[]")  # JSON, but not an alias record
    result = store.push(variant(store_bundle, tmp_path, 2), name="digits", aliases=["staging"])
    assert result.created and result.version.seq == 2
    assert [m.alias for m in result.aliases] == ["latest", "staging"]
    assert store.resolve(parse_ref(f"{store_uri}/digits@latest")).seq == 2


def test_a_damaged_version_record_hides_no_other_version_and_names_the_repair(
    store_uri: str, store_bundle: Path, tmp_path: Path, cli
) -> None:
    store = Store.open(store_uri)
    first = variant(store_bundle, tmp_path, 1)
    broken = store.push(first, name="digits").version
    store.push(variant(store_bundle, tmp_path, 2), name="digits")
    store.backend.write(f"{broken.key}/version.json", b'{"seq": "one"')
    assert [v.seq for v in store.versions("digits")] == [2]
    listed = cli("models", "list", store_uri, "digits", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [row["version"] for row in json.loads(listed.stdout)] == [2]
    assert "damaged version" in listed.stderr and "Traceback" not in listed.stderr
    with pytest.raises(StoreError, match=r"version\.json is not valid JSON") as info:
        store.push(first, name="digits")  # the same bundle: its version is the damaged one
    assert info.value.exit_code == 1
    assert f"remove the folder {broken.key} from {store.uri} and push that bundle again" in (info.value.hint or "")


def test_an_alias_nested_too_deeply_is_a_damaged_record_too(tmp_path: Path, store_bundle: Path, cli) -> None:
    """One alias of '[[[[…' a hundred thousand deep made `models list` of the whole store die of an 'unexpected
    RecursionError'."""
    uri = str(tmp_path / "store")
    store = Store.open(uri)
    store.push(store_bundle, name="digits", aliases=["production"])
    store.backend.write("digits/aliases/production", b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(StoreError, match=r"alias digits@production .*nested too deeply to be a record"):
        store.resolve(parse_ref(f"{uri}/digits@production"))
    listed = cli("models", "list", uri, "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [{"name": "digits", "versions": 1, "latest": 1, "aliases": {"latest": 1}}]
    assert "damaged alias" in listed.stderr and "unexpected" not in listed.stderr


def test_a_pull_clears_the_download_folder_a_killed_pull_left(
    store_uri: str, store_bundle: Path, tmp_path: Path
) -> None:
    """`imgcls pull` killed mid-download left `.NAME.pull-*` (part of a model) beside the destination."""
    import os
    import time

    store = Store.open(store_uri)
    version = store.push(store_bundle, name="digits").version
    killed = tmp_path / ".pulled.pull-k1ll3d"
    killed.mkdir()
    (killed / "weights.safetensors").write_bytes(b"half a download")
    os.utime(killed, (time.time() - 600, time.time() - 600))
    store.pull(version, tmp_path / "pulled")
    assert not killed.exists() and (tmp_path / "pulled" / "bundle.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".pulled")) == []
