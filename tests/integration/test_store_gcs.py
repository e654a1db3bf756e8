"""GCS specifics, through the real google-cloud-storage client against the emulator behind the
precondition-enforcing proxy (see conftest): preconditions are sent, conflicts handled, transfers checked,
missing buckets and credentials explained."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from _store_helpers import BUCKET, cli_env, variant

from imgcls.errors import StoreError
from imgcls.store import Store, resolve_model


@pytest.fixture
def gcs_uri(gcs_emulator) -> str:
    return f"gs://{BUCKET}/g-{uuid.uuid4().hex[:10]}"


def test_push_sends_create_only_preconditions_for_every_version_object(gcs_emulator, gcs_uri, store_bundle) -> None:
    prefix = gcs_uri.split("/", 3)[3]
    Store.open(gcs_uri).push(store_bundle, name="digits")
    uploads = gcs_emulator.uploads(prefix + "/")
    names = {r["name"].removeprefix(prefix + "/"): r["precondition"] for r in uploads}
    version_objects = {n: p for n, p in names.items() if "/versions/" in n or "/sequence/" in n}
    assert {n.rsplit("/", 1)[-1] for n in version_objects} >= {
        "weights.safetensors",
        "bundle.json",
        "version.json",
        "1",
    }
    assert set(version_objects.values()) == {"0"}, version_objects
    assert names["digits/aliases/latest"] == "0"  # a new alias is created create-only too


def test_alias_move_sends_the_generation_it_read(gcs_emulator, gcs_uri, store_bundle, tmp_path) -> None:
    store = Store.open(gcs_uri)
    store.push(variant(store_bundle, tmp_path, 1), name="digits")
    store.push(variant(store_bundle, tmp_path, 2), name="digits")
    before = store.alias("digits", "latest")
    store.set_alias("digits", "latest", "1")
    alias_writes = gcs_emulator.uploads(gcs_uri.split("/", 3)[3] + "/digits/aliases/latest")
    assert alias_writes[-1]["precondition"] == str(before.generation)
    assert store.alias("digits", "latest").seq == 1


def test_second_create_only_write_is_rejected_enforcing_proxy(gcs_emulator, gcs_uri) -> None:
    from imgcls.store.backend import PreconditionFailed

    backend = Store.open(gcs_uri).backend
    backend.write("digits/sequence/1", b'{"digest": "a"}', if_generation_match=0)
    rejected = gcs_emulator.rejected
    with pytest.raises(PreconditionFailed):
        backend.write("digits/sequence/1", b'{"digest": "b"}', if_generation_match=0)
    assert gcs_emulator.rejected == rejected + 1
    assert backend.read("digits/sequence/1")[0] == b'{"digest": "a"}'


@pytest.mark.parametrize("mangle", ["flip", "truncate"])
def test_corrupt_or_cut_download_is_refused(gcs_emulator, gcs_uri, store_bundle, tmp_path, mangle) -> None:
    store = Store.open(gcs_uri)
    version = store.push(store_bundle, name="digits").version
    gcs_emulator.mangle_downloads = mangle
    try:
        with pytest.raises(StoreError) as info:
            store.pull(version, tmp_path / "out")
    finally:
        gcs_emulator.mangle_downloads = None
    assert info.value.exit_code == 1
    # the client's own crc32c check catches both before a byte is kept
    assert info.value.message.startswith("GCS transfer failed its integrity check while trying to read ")
    assert info.value.hint == "the data was corrupted or cut short in transit; try again"
    assert not (tmp_path / "out").exists()
    assert resolve_model(f"{gcs_uri}/digits@latest", cache_dir=tmp_path / "cache").is_dir()  # fine once healed


def test_missing_bucket_exits_2_with_a_hint(gcs_emulator, store_bundle, cli) -> None:
    res = cli("push", str(store_bundle), "--to", "gs://no-such-bucket-imgcls/models", "--name", "digits")
    assert res.returncode == 2, res.stderr
    assert "bucket gs://no-such-bucket-imgcls does not exist" in res.stderr and "hint:" in res.stderr
    res = cli("models", "list", "gs://no-such-bucket-imgcls/models", "digits")
    assert res.returncode == 2 and "does not exist" in res.stderr
    res = cli("pull", "gs://no-such-bucket-imgcls/models/digits@production", "--to", "out")
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr


def test_missing_credentials_exit_2_with_a_hint(tmp_path: Path, store_bundle, cli) -> None:
    env = cli_env(HOME=str(tmp_path), NO_GCE_CHECK="true", GCE_METADATA_HOST="127.0.0.1:9")
    for var in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG"):
        env.pop(var, None)
    res = cli("push", str(store_bundle), "--to", "gs://some-bucket/models", env=env)
    assert res.returncode == 2, res.stderr
    assert "no Google Cloud credentials" in res.stderr and "gcloud auth application-default login" in res.stderr


def test_large_file_goes_up_resumable_with_progress_and_comes_back_identical(
    gcs_emulator, gcs_uri, store_bundle, tmp_path
) -> None:

    from imgcls.bundle import read_manifest, write_manifest
    from imgcls.store.gcs import RESUMABLE_CHUNK

    big = store_bundle / "extra.bin"
    big.write_bytes(bytes(range(256)) * ((RESUMABLE_CHUNK + 12345) // 256))
    meta = read_manifest(store_bundle)
    write_manifest(store_bundle, meta, [*meta.files, "extra.bin"])
    seen: list[tuple[str, int, int]] = []
    store = Store.open(gcs_uri)
    version = store.push(store_bundle, name="digits", progress=lambda k, d, t: seen.append((k, d, t))).version
    big_reports = [(d, t) for k, d, t in seen if k.endswith("extra.bin")]
    assert len(big_reports) >= 2 and big_reports[-1] == (big.stat().st_size, big.stat().st_size)
    resumable = [r for r in gcs_emulator.requests if r.get("q_uploadType") == "resumable" and r["method"] == "POST"]
    assert any(r.get("q_ifGenerationMatch") == "0" for r in resumable)  # the create-only precondition is sent
    out = store.pull(version, tmp_path / "out")
    assert (out / "extra.bin").read_bytes() == big.read_bytes()
