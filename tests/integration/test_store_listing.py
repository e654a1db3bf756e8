"""`models list`: only models are listed, and a model with no committed version says what happened.

Before, every sub-folder of the store's root was a "model" (`models list .` in a repository listed `docs`,
`tests`, … with 0 versions), and `models list STORE digits` for a model whose only push was interrupted said
"no model named 'digits'" with the hint "models in this store: digits".
"""

from __future__ import annotations

import json
from pathlib import Path

from imgcls.bundle import load_bundle
from imgcls.store import Store


def test_only_folders_holding_a_model_are_models(store_uri: str, store_bundle: Path, tmp_path: Path, cli) -> None:
    store = Store.open(store_uri)
    store.push(store_bundle, name="digits")
    store.backend.write("docs/readme.txt", b"not a model")  # whatever else lives beside the models
    store.backend.write("notes", b"a file")
    assert store.models() == ["digits"]
    listed = cli("models", "list", store_uri, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [row["name"] for row in json.loads(listed.stdout)] == ["digits"]
    missing = cli("pull", f"{store_uri}/other@latest", "--to", str(tmp_path / "out"))
    assert missing.returncode == 2 and "models in this store: digits" in missing.stderr, missing.stderr


def test_a_model_whose_only_push_was_interrupted_says_so(store_uri: str, store_bundle: Path, cli) -> None:
    store = Store.open(store_uri)
    digest = load_bundle(store_bundle).digest
    store.backend.upload_file(
        f"digits/versions/{digest[:16]}/weights.safetensors", store_bundle / "weights.safetensors"
    )
    res = cli("models", "list", store_uri, "digits")
    assert res.returncode == 2
    assert "model 'digits'" in res.stderr and "has no committed version yet" in res.stderr, res.stderr
    assert f"imgcls push BUNDLE --to {store.uri} --name digits" in res.stderr and "Traceback" not in res.stderr


def test_listing_a_folder_that_does_not_exist_says_so(tmp_path: Path, cli) -> None:
    res = cli("models", "list", str(tmp_path / "typo"))
    assert res.returncode == 0 and "no store there yet" in res.stdout, res.stdout
    assert not (tmp_path / "typo").exists()
