"""`serve --watch`: the alias section of the public `GET /v1/model` names no folder of the server.

Anyone may read `GET /v1/model`; the server-side reference (a local store is a path on the server's disk) is for
the admin token only, and the error of a refused version says what was refused, not where the server keeps it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _store_helpers import variant
from fastapi.testclient import TestClient
from pydantic import SecretStr

from imgcls.runtime import Predictor
from imgcls.serve.app import create_app
from imgcls.serve.settings import ServeSettings
from imgcls.store import AliasWatcher, Store

TOKEN = "t0ken-for-watch-tests"


def test_a_refused_version_is_reported_without_the_paths_of_this_machine(
    random_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loader's own error names the pulled copy (``bundle /…/models/digits/ID has no fp32 ONNX model``)."""
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    store = Store.open(tmp_path / "store")
    store.push(random_bundle, name="digits")
    store.set_alias("digits", "production", "1", force=True)
    ref = f"{tmp_path / 'store'}/digits@production"
    with AliasWatcher(ref, 3600, lambda path: Predictor.from_bundle(path)) as watcher:  # serving version 1
        store.push(variant(random_bundle, tmp_path, 2), name="digits")
        store.set_alias("digits", "production", "2", force=True)  # no ONNX export: the loader refuses it
        assert watcher.poll() is None and watcher.stats.refused == 1
        public = watcher.status(full=False)
        assert "ref" not in public
        error = public["refused"]["error"]
        assert "digits:2" in error and "no fp32 ONNX model" in error, error
        assert str(tmp_path) not in json.dumps(public), public
        assert watcher.status()["ref"] == ref  # the full view (the admin's) keeps it


def test_public_model_info_shows_the_alias_but_not_the_server_side_reference(
    exported_digits_bundle: Path, random_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    store = Store.open(tmp_path / "store")
    store.push(exported_digits_bundle, name="digits")
    store.set_alias("digits", "production", "1")
    store.push(random_bundle, name="digits")  # never exported
    settings = ServeSettings(
        model=f"{tmp_path / 'store'}/digits@production",
        watch_s=3600,  # polled by hand below
        log_predictions=None,
        admin_token=SecretStr(TOKEN),
    )
    with TestClient(create_app(settings)) as client:
        store.set_alias("digits", "production", "2", force=True)
        client.app.state.server.watcher.poll()  # type: ignore[attr-defined]
        public = client.get("/v1/model")
        assert public.status_code == 200
        alias = public.json()["alias"]
        assert alias["wanted"]["version"] == 2 and alias["served"]["version"] == 1 and alias["in_sync"] is False
        assert "ref" not in alias and "no fp32 ONNX model" in alias["refused"]["error"]
        assert str(tmp_path) not in public.text, public.text  # neither the store's folder nor the cache's
        admin = client.get("/v1/model", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert admin["alias"]["ref"] == f"{tmp_path / 'store'}/digits@production"
