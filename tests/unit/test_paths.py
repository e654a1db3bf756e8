"""One cache root, one layout: every room derives its folder from $IMGCLS_CACHE the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgcls import paths


def test_every_folder_lives_under_the_one_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from imgcls.data.datasets import default_data_dir
    from imgcls.serve.settings import default_log_path
    from imgcls.store import default_store_uri
    from imgcls.store.cache import default_cache_dir

    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "c"))
    monkeypatch.delenv("IMGCLS_STORE", raising=False)
    root = tmp_path / "c"
    assert default_data_dir() == root / "data"
    assert default_cache_dir() == root / "models"
    assert default_log_path() == root / "serve" / "predictions.sqlite"
    assert default_store_uri() == str(root / "store")
    monkeypatch.setenv("IMGCLS_STORE", "gs://bucket/models")
    assert default_store_uri() == "gs://bucket/models"


def test_without_the_variable_the_root_is_the_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for blank in (None, "", "  "):
        if blank is None:
            monkeypatch.delenv("IMGCLS_CACHE", raising=False)
        else:
            monkeypatch.setenv("IMGCLS_CACHE", blank)
        assert paths.cache_root() == tmp_path / ".cache" / "imgcls"
    assert paths.models_dir({"IMGCLS_CACHE": "~/x"}) == tmp_path / "x" / "models"


def test_doctor_measures_the_cache_root(tmp_path: Path) -> None:
    from imgcls.doctor import _cache_dir

    assert _cache_dir({"IMGCLS_CACHE": str(tmp_path)}, home=Path("/nowhere")) == tmp_path
    assert _cache_dir({}, home=tmp_path) == tmp_path / ".cache" / "imgcls"
