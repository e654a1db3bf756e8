"""imgcls.wandb_run: the one W&B start-up of train, drift, store and serve, against the real wandb (offline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgcls.errors import ImgclsError, StoreError
from imgcls.wandb_run import start_run

wandb = pytest.importorskip("wandb")


def test_an_offline_run_starts_in_the_folder_it_makes(tmp_path: Path) -> None:
    folder = tmp_path / "not" / "yet"
    run = start_run(wandb, directory=folder, project="imgcls-test", mode="offline", job_type="test")
    try:
        assert run.id
        assert any(folder.rglob("offline-run-*")), "the run is written under the folder given"
    finally:
        run.finish()


def test_a_run_that_cannot_start_is_a_clear_error_not_a_wandb_traceback(tmp_path: Path) -> None:
    with pytest.raises(ImgclsError) as caught:
        start_run(wandb, directory=tmp_path, project="imgcls-test", mode="no-such-mode")
    assert caught.value.exit_code == 2
    assert "could not start the W&B run" in str(caught.value)
    assert "--wandb-mode offline" in (caught.value.hint or "")


def test_the_caller_names_its_own_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="W&B could not start a run: "):
        start_run(
            wandb,
            fail=lambda exc: StoreError(f"W&B could not start a run: {exc}"),
            directory=tmp_path,
            quiet=False,
            mode="no-such-mode",
        )
