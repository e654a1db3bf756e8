"""imgcls.wandb_run.resolve_mode / has_api_key: the one place the W&B mode is decided (serve, drift, push, alias
moves; train checks its configured mode with has_api_key). wandb's own default would prompt on a terminal."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgcls.errors import UsageError
from imgcls.wandb_run import has_api_key, resolve_mode

KEY = "k" * 40


def _netrc(path: Path, host: str = "api.wandb.ai", password: str = KEY) -> Path:
    path.write_text(f"machine {host}\n  login user\n  password {password}\n")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(
    ("env", "mode"),
    [
        ({"WANDB_MODE": "offline"}, "offline"),
        ({"WANDB_MODE": "dryrun"}, "offline"),
        ({"WANDB_MODE": " Disabled "}, "disabled"),
        ({"WANDB_MODE": "online", "WANDB_API_KEY": KEY}, "online"),
        ({"WANDB_API_KEY": KEY}, "online"),
        ({"WANDB_MODE": "offline", "WANDB_API_KEY": KEY}, "offline"),  # asked for: offline even with a key
    ],
)
def test_the_mode_follows_wandb_mode_then_the_key(env: dict[str, str], mode: str, tmp_path: Path) -> None:
    env = {**env, "NETRC": str(tmp_path / "none")}
    assert resolve_mode(env) == mode
    assert resolve_mode(env, fallback="offline") == mode


def test_without_a_key_serve_refuses_and_a_push_record_goes_offline(tmp_path: Path) -> None:
    env = {"NETRC": str(tmp_path / "none")}
    with pytest.raises(UsageError) as info:
        resolve_mode(env)
    assert info.value.exit_code == 2 and "WANDB_MODE=offline" in (info.value.hint or "")
    assert resolve_mode(env, fallback="offline") == "offline"


def test_online_asked_for_without_a_key_is_refused_even_with_a_fallback(tmp_path: Path) -> None:
    env = {"NETRC": str(tmp_path / "none")}
    with pytest.raises(UsageError, match="WANDB_MODE is not offline"):
        resolve_mode({**env, "WANDB_MODE": "online"}, fallback="offline")
    with pytest.raises(UsageError, match="--wandb-mode online needs a W&B API key") as info:
        resolve_mode(env, requested="online", fallback="offline")
    assert "wandb login" in (info.value.hint or "")


def test_the_flag_wins_over_the_environment_and_must_be_online_or_offline(tmp_path: Path) -> None:
    env = {"NETRC": str(tmp_path / "none"), "WANDB_MODE": "online"}
    assert resolve_mode(env, requested="offline") == "offline"
    with pytest.raises(UsageError, match="--wandb-mode must be online or offline, not 'disabled'"):
        resolve_mode(env, requested="disabled")


def test_wandb_login_in_netrc_counts_as_a_key(tmp_path: Path) -> None:
    netrc = _netrc(tmp_path / "netrc")
    assert resolve_mode({"NETRC": str(netrc)}) == "online"
    assert resolve_mode({"NETRC": str(netrc)}, fallback="offline") == "online"  # a logged-in push goes online
    home = tmp_path / "home"
    home.mkdir()
    assert not has_api_key({}, home)
    _netrc(home / ".netrc")
    assert has_api_key({}, home)


def test_a_netrc_entry_for_another_host_or_without_a_password_is_no_key(tmp_path: Path) -> None:
    other = _netrc(tmp_path / "other", host="example.com")
    assert not has_api_key({"NETRC": str(other)})
    assert has_api_key({"NETRC": str(other), "WANDB_BASE_URL": "https://example.com/"})  # a self-hosted server
    empty = _netrc(tmp_path / "empty", password='""')
    assert not has_api_key({"NETRC": str(empty)})
    broken = tmp_path / "broken"
    broken.write_text("machine\n")
    assert not has_api_key({"NETRC": str(broken)})
