"""Store references, names and keys: parsing, validation, and a corpus of path-escape payloads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from imgcls.errors import ImgclsError, StoreError, UsageError
from imgcls.store import Store, is_store_ref, parse_ref, parse_store_uri, resolve_model
from imgcls.store.refs import check_store_key, validate_name

ESCAPES = [
    "..",
    "../etc",
    "../../etc/passwd",
    "a/../../b",
    "/etc/passwd",
    "/",
    "a/b",
    "..\\..\\windows",
    "a\\b",
    "%2e%2e",
    "%2e%2e%2fetc",
    "..%2f..%2fetc",
    "%252e%252e",
    "a\x00b",
    "\x00",
    ".",
    ".hidden",
    "-dash-first",
    "_under",
    "Upper",
    "a" * 65,
    "",
    " spaced",
    "name\n",
    "ümlaut",
    "a:b",
    "a@b",
    "~",
    "~root",
    "$HOME",
]


@pytest.mark.parametrize("payload", ESCAPES)
def test_names_reject_escape_payloads(payload: str) -> None:
    with pytest.raises(UsageError) as info:
        validate_name(payload)
    assert "[a-z0-9][a-z0-9._-]{0,63}" in (info.value.hint or "")


@pytest.mark.parametrize("good", ["digits", "a", "0", "resnet8.v2", "my_model-1", "a" * 64, "a..b"])
def test_valid_names(good: str) -> None:
    assert validate_name(good) == good


KEY_ESCAPES = ["..", "../x", "a/../../x", "/abs", "a\\..\\b", "a/%2e%2e/b", "a\x00", "a//b", "./a", "a/."]


@pytest.mark.parametrize("key", KEY_ESCAPES)
def test_store_keys_cannot_escape(key: str) -> None:
    with pytest.raises(StoreError):
        check_store_key(key)


@pytest.mark.parametrize("payload", ESCAPES)
@pytest.mark.parametrize("field", ["name", "alias", "version"])
def test_no_reference_escapes_the_local_store_root(payload: str, field: str, tmp_path: Path) -> None:
    """Every payload, in every position of a reference, is refused before any file outside the root is touched."""
    root = tmp_path / "store"
    outside = tmp_path / "outside"
    outside.mkdir()
    ref = {
        "name": f"{root}/{payload}@latest",
        "alias": f"{root}/digits@{payload}",
        "version": f"{root}/digits:{payload}",
    }
    with pytest.raises(ImgclsError):
        store = Store.open(root)
        mref = parse_ref(ref[field])
        store.resolve(mref)
    with pytest.raises(ImgclsError):
        Store.open(root).set_alias(
            payload if field == "name" else "digits",
            payload if field == "alias" else "x",
            payload if field == "version" else "1",
        )
    assert list(outside.iterdir()) == []
    assert not root.exists() or all(p.is_relative_to(root) for p in root.rglob("*"))


@pytest.mark.parametrize("key", KEY_ESCAPES)
def test_local_backend_refuses_escaping_keys(key: str, tmp_path: Path) -> None:
    backend = Store.open(tmp_path / "store").backend
    with pytest.raises(StoreError):
        backend.write(key, b"x")
    with pytest.raises(StoreError):
        backend.read(key)
    assert not (tmp_path / "x").exists()


def test_local_backend_refuses_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "digits").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StoreError, match="outside"):
        Store.open(root).backend.write("digits/aliases/latest", b"{}")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_gcs_keys_stay_under_the_prefix() -> None:
    from imgcls.store.gcs import GCSBackend

    backend = GCSBackend(parse_store_uri("gs://bucket/models"), client=object())
    assert backend._key("digits/versions/abc/bundle.json") == "models/digits/versions/abc/bundle.json"
    for key in KEY_ESCAPES:
        with pytest.raises(StoreError):
            backend._key(key)


@pytest.mark.parametrize(
    ("text", "store", "name", "alias", "version"),
    [
        ("gs://bkt/models/digits@production", "gs://bkt/models", "digits", "production", None),
        ("gs://bkt/digits:3", "gs://bkt", "digits", None, "3"),
        ("gs://bkt/a/b/c/digits", "gs://bkt/a/b/c", "digits", "latest", None),
        ("file:///srv/store/digits@staging", "/srv/store", "digits", "staging", None),
        ("/srv/store/digits:a1b2c3d4", "/srv/store", "digits", None, "a1b2c3d4"),
        ("digits@production", "/default/store", "digits", "production", None),
    ],
)
def test_parse_ref(text: str, store: str, name: str, alias: str | None, version: str | None) -> None:
    ref = parse_ref(text, default_store="/default/store")
    assert (str(ref.store), ref.name, ref.alias, ref.version) == (store, name, alias, version)


@pytest.mark.parametrize(
    "bad",
    [
        "gs://digits@production",
        "gs://Bad_Bucket/x@y",
        "gs://bkt/../x/digits@a",
        "gs://bkt/%2e%2e/digits@a",
        "s3://bkt/digits@a",
        "http://example.com/digits@a",
        "file://relative/digits@a",
        "/srv/store/digits:0",
        "/srv/store/digits:xyz",
        "/srv/store/digits@",
        "/srv/store/Digits@prod",
    ],
)
def test_bad_refs_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_ref(bad)
    assert info.value.exit_code == 2


def test_default_store_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IMGCLS_STORE", str(tmp_path / "s"))
    assert str(parse_ref("digits@production").store) == str(tmp_path / "s")
    monkeypatch.delenv("IMGCLS_STORE")
    assert str(parse_ref("digits@production").store).endswith(".cache/imgcls/store")


def test_bundle_dirs_are_not_store_refs(random_bundle: Path, tmp_path: Path) -> None:
    assert not is_store_ref(random_bundle)
    assert resolve_model(random_bundle) == random_bundle
    odd = tmp_path / "model@v2"  # a real bundle directory whose name looks like a reference
    odd.symlink_to(random_bundle, target_is_directory=True)
    assert resolve_model(odd) == odd
    assert is_store_ref("/srv/store/digits@production") and is_store_ref("gs://b/x") and is_store_ref("digits:3")


def test_missing_bundle_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ImgclsError, match="does not exist"):
        resolve_model(tmp_path / "nope")


def test_resolving_a_bundle_dir_imports_nothing_heavy(random_bundle: Path) -> None:
    code = (
        "import sys; from imgcls.store import resolve_model; resolve_model(sys.argv[1]); "
        "heavy = [m for m in ('torch', 'google.cloud.storage', 'wandb', 'onnxruntime') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(random_bundle)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
