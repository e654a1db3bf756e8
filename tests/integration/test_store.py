"""The model store, the same suite on both backends: a local folder and GCS (real client, emulator)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _store_helpers import flip_stored_byte, tree_bytes, variant

from imgcls.bundle import MANIFEST, load_bundle
from imgcls.errors import ConflictError, StoreError, UsageError
from imgcls.store import Store, parse_ref, resolve_model, resolve_model_version
from imgcls.store.backend import PreconditionFailed


def test_round_trip_is_byte_identical(store_uri: str, store_bundle: Path, tmp_path: Path) -> None:
    store = Store.open(store_uri)
    result = store.push(store_bundle, name="digits")
    assert result.created and result.version.seq == 1
    assert [m.alias for m in result.aliases] == ["latest"]
    out = store.pull(store.resolve(parse_ref(f"{store_uri}/digits@latest")), tmp_path / "pulled")
    assert tree_bytes(out) == tree_bytes(store_bundle)
    assert load_bundle(out).digest == load_bundle(store_bundle).digest
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pulled")]  # no temp folder left


def test_repush_is_a_noop_reporting_the_existing_version(store_uri: str, store_bundle: Path) -> None:
    store = Store.open(store_uri)
    first = store.push(store_bundle, name="digits")
    again = store.push(store_bundle, name="digits")
    assert not again.created
    assert again.version == first.version and again.aliases == []
    assert [v.seq for v in store.versions("digits")] == [1]


def test_versions_are_numbered_and_latest_moves(store_uri: str, store_bundle: Path, tmp_path: Path) -> None:
    store = Store.open(store_uri)
    for i in range(3):
        store.push(variant(store_bundle, tmp_path, i), name="digits", aliases=["staging"] if i == 1 else [])
    versions = store.versions("digits")
    assert [v.seq for v in versions] == [1, 2, 3]
    assert [v.metrics["variant"] for v in versions] == [0, 1, 2]
    assert len({v.digest for v in versions}) == 3
    aliases = store.aliases("digits")
    assert aliases["latest"].seq == 3 and aliases["staging"].seq == 2
    # pinned by number and by digest prefix
    assert store.version("digits", "2").digest == versions[1].digest
    assert store.version("digits", versions[0].digest[:8]).seq == 1
    assert store.models() == ["digits"]


def test_promote_and_roll_back(store_uri: str, store_bundle: Path, tmp_path: Path) -> None:
    store = Store.open(store_uri)
    store.push(variant(store_bundle, tmp_path, 1), name="digits")
    store.push(variant(store_bundle, tmp_path, 2), name="digits")
    move = store.set_alias("digits", "production", "2")
    assert move.previous is None and move.version.seq == 2
    back = store.set_alias("digits", "production", "1")
    assert back.previous is not None and back.previous.seq == 2 and back.version.seq == 1
    path, version = resolve_model_version(f"{store_uri}/digits@production", cache_dir=tmp_path / "cache")
    assert version is not None and version.seq == 1
    assert load_bundle(path).metrics.extra("variant") == 1


def test_alias_move_sends_its_precondition_and_a_stale_one_conflicts(store_uri: str, store_bundle: Path) -> None:
    """Compare-and-swap on both backends: a write based on a stale read of the alias fails."""
    store = Store.open(store_uri)
    store.push(store_bundle, name="digits")
    alias = store.alias("digits", "latest")
    assert alias is not None
    store.backend.write("digits/aliases/latest", b'{"version": 1, "digest": "x"}', if_generation_match=alias.generation)
    with pytest.raises(PreconditionFailed):
        store.backend.write("digits/aliases/latest", b"{}", if_generation_match=alias.generation)
    with pytest.raises(PreconditionFailed):
        store.backend.write("digits/sequence/1", b"{}", if_generation_match=0)


def test_stored_flipped_byte_is_refused_by_pull_and_resolve(store_uri: str, store_bundle: Path, tmp_path: Path) -> None:
    store = Store.open(store_uri)
    version = store.push(store_bundle, name="digits").version
    flip_stored_byte(store_uri, version.key, "weights.safetensors")
    with pytest.raises(StoreError, match="failed verification and was refused") as info:
        store.pull(version, tmp_path / "out")
    assert info.value.exit_code == 1
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
    with pytest.raises(StoreError, match="refused"):
        resolve_model(f"{store_uri}/digits@latest", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "digits" / version.id).exists()


def test_tampered_stored_manifest_is_refused(store_uri: str, store_bundle: Path, tmp_path: Path) -> None:
    store = Store.open(store_uri)
    version = store.push(store_bundle, name="digits").version
    raw = store.backend.read(f"{version.key}/{MANIFEST}")[0]
    meta = json.loads(raw)
    meta["classes"][0] = "cat"
    store.backend.write(f"{version.key}/{MANIFEST}", json.dumps(meta).encode())
    with pytest.raises(StoreError, match="does not match the version's digest"):
        store.pull(version, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_partial_version_is_refused(store_uri: str, store_bundle: Path, tmp_path: Path) -> None:
    store = Store.open(store_uri)
    version = store.push(store_bundle, name="digits").version
    store.backend.delete(f"{version.key}/weights.safetensors")
    with pytest.raises(StoreError) as info:
        store.pull(version, tmp_path / "out")
    # the pull checks the stored listing against the manifest before downloading anything (both backends)
    assert re.fullmatch(
        r"digits:1 \([0-9a-f]{12}\): weights\.safetensors is missing from the store", info.value.message
    ), info.value.message
    assert info.value.hint == "the stored version is partial; push the same bundle again to complete it"
    assert not (tmp_path / "out").exists()


def test_interrupted_push_is_completed_by_pushing_again(store_uri: str, store_bundle: Path) -> None:
    store = Store.open(store_uri)
    digest = load_bundle(store_bundle).digest
    key = f"digits/versions/{digest[:16]}"
    store.backend.upload_file(f"{key}/weights.safetensors", store_bundle / "weights.safetensors")  # then "crash"
    assert store.versions("digits") == []
    result = store.push(store_bundle, name="digits")
    assert result.created and result.version.seq == 1


def test_object_left_with_other_content_is_not_trusted(store_uri: str, store_bundle: Path, tmp_path: Path) -> None:
    store = Store.open(store_uri)
    digest = load_bundle(store_bundle).digest
    junk = tmp_path / "junk"
    junk.write_bytes(b"not the weights")
    store.backend.upload_file(f"digits/versions/{digest[:16]}/weights.safetensors", junk)
    with pytest.raises(StoreError, match="different content"):
        store.push(store_bundle, name="digits")


def test_resolve_model_caches_by_version_and_repairs_a_damaged_copy(
    store_uri: str, store_bundle: Path, tmp_path: Path
) -> None:
    store = Store.open(store_uri)
    version = store.push(store_bundle, name="digits").version
    cache = tmp_path / "cache"
    first = resolve_model(f"{store_uri}/digits@latest", cache_dir=cache)
    assert first == cache / "digits" / version.id
    assert resolve_model(f"{store_uri}/digits:1", cache_dir=cache) == first
    weights = first / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    again = resolve_model(f"{store_uri}/digits@latest", cache_dir=cache)
    assert again == first and load_bundle(again).digest == version.digest  # pulled again, verified


def test_pull_refuses_a_non_empty_destination(store_uri: str, store_bundle: Path, tmp_path: Path) -> None:
    store = Store.open(store_uri)
    version = store.push(store_bundle, name="digits").version
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not an empty folder"):
        store.pull(version, busy)
    assert (busy / "notes.txt").read_text() == "mine"


def test_unknown_names_aliases_and_versions_say_what_exists(store_uri: str, store_bundle: Path) -> None:
    store = Store.open(store_uri)
    store.push(store_bundle, name="digits")
    with pytest.raises(StoreError, match="no model named 'other'") as info:
        store.resolve(parse_ref(f"{store_uri}/other@latest"))
    assert "digits" in (info.value.hint or "")
    with pytest.raises(StoreError, match="no alias 'production'"):
        store.resolve(parse_ref(f"{store_uri}/digits@production"))
    with pytest.raises(StoreError, match="no version '9'"):
        store.resolve(parse_ref(f"{store_uri}/digits:9"))


def test_conflicting_alias_move_exits_3_enforcing_proxy(store_uri: str, store_bundle: Path, tmp_path: Path) -> None:
    """set_alias loses a race: the alias moves between its read and its write (on GCS: 412 from the proxy)."""
    store = Store.open(store_uri)
    store.push(variant(store_bundle, tmp_path, 1), name="digits")
    store.push(variant(store_bundle, tmp_path, 2), name="digits")
    store.push(variant(store_bundle, tmp_path, 3), name="digits")
    store.set_alias("digits", "production", "1")
    rival = Store.open(store_uri)
    original_alias = store.alias

    def read_then_lose(name: str, alias: str):  # the rival moves the alias right after our read
        seen = original_alias(name, alias)
        if alias == "production" and seen is not None and seen.seq == 1:
            rival.set_alias("digits", "production", "2")
        return seen

    store.alias = read_then_lose  # type: ignore[method-assign]
    with pytest.raises(ConflictError, match="moved by someone else") as info:
        store.set_alias("digits", "production", "3")
    assert info.value.exit_code == 3
    assert Store.open(store_uri).alias("digits", "production").seq == 2  # the winner's value, intact


def test_cli_push_list_show_alias_pull(store_uri: str, store_bundle: Path, tmp_path: Path, cli) -> None:
    pushed = cli("push", str(store_bundle), "--to", store_uri, "--name", "digits", "--alias", "staging")
    assert pushed.returncode == 0, pushed.stderr
    assert "pushed digits version 1" in pushed.stdout and "@staging -> 1" in pushed.stdout
    again = cli("push", str(store_bundle), "--to", store_uri, "--name", "digits")
    assert again.returncode == 0 and "already stored: digits version 1" in again.stdout
    assert "nothing uploaded" in again.stdout
    listed = cli("models", "list", store_uri, "digits", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["version"] for r in rows] == [1] and rows[0]["aliases"] == ["latest", "staging"]
    assert cli("models", "alias", store_uri, "digits", "1", "production").returncode == 0
    shown = cli("models", "show", store_uri, "digits@production")
    assert shown.returncode == 0 and "digits version 1" in shown.stdout and "production" in shown.stdout
    pulled = cli("pull", f"{store_uri}/digits@production", "--to", str(tmp_path / "out"))
    assert pulled.returncode == 0, pulled.stderr
    assert tree_bytes(tmp_path / "out") == tree_bytes(store_bundle)
    missing = cli("models", "alias", store_uri, "digits", "7", "production")
    assert missing.returncode == 2 and "no version '7'" in missing.stderr and "Traceback" not in missing.stderr


def test_cli_pull_of_corrupt_version_exits_1_and_writes_nothing(
    store_uri: str, store_bundle: Path, tmp_path: Path, cli
) -> None:
    store = Store.open(store_uri)
    version = store.push(store_bundle, name="digits").version
    flip_stored_byte(store_uri, version.key, "weights.safetensors")
    res = cli("pull", f"{store_uri}/digits@latest", "--to", str(tmp_path / "out"))
    assert res.returncode == 1
    assert "failed verification and was refused" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


def test_cli_default_store_and_file_uris(store_bundle: Path, tmp_path: Path, cli) -> None:
    from _store_helpers import cli_env

    env = cli_env(IMGCLS_STORE=str(tmp_path / "default-store"), IMGCLS_CACHE=str(tmp_path / "cache"))
    pushed = cli("push", str(store_bundle), "--name", "digits", "--alias", "production", env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert (tmp_path / "default-store" / "digits" / "aliases" / "production").is_file()
    pulled = cli("pull", "digits@production", "--to", str(tmp_path / "a"), env=env)
    assert pulled.returncode == 0, pulled.stderr
    uri = (tmp_path / "default-store").as_uri()
    pulled = cli("pull", f"{uri}/digits:1", "--to", str(tmp_path / "b"), env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b") == tree_bytes(store_bundle)
    bad = cli("pull", "../etc@production", "--to", str(tmp_path / "c"), env=env)
    assert bad.returncode == 2 and "no model named 'etc'" in bad.stderr
    bad = cli("models", "alias", uri, "digits", "1", "../../x", env=env)
    assert bad.returncode == 2 and "invalid alias" in bad.stderr and not (tmp_path / "x").exists()


def test_pull_refuses_an_oversized_version_before_downloading_and_stops_at_the_first_bad_file(
    store_uri: str, store_bundle: Path, tmp_path: Path, cli
) -> None:
    store = Store.open(store_uri)
    version = store.push(store_bundle, name="digits").version
    res = cli("pull", f"{store_uri}/digits@latest", "--to", str(tmp_path / "out"), "--max-bundle-mb", "0.001")
    assert res.returncode == 2 and "nothing was downloaded" in res.stderr and "--max-bundle-mb" in res.stderr
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    files = sorted(json.loads((store_bundle / MANIFEST).read_text())["files"])
    flip_stored_byte(store_uri, version.key, files[0])
    seen: list[str] = []
    with pytest.raises(StoreError, match="failed verification"):
        store.pull(version, tmp_path / "bad", progress=lambda key, done, total: seen.append(key))
    assert seen and all(key.endswith(files[0]) for key in seen)  # verified on arrival: nothing after it was fetched
