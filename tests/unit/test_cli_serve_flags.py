"""`imgcls serve` takes its flags' help, defaults and ranges from ServeSettings: one source of truth."""

from __future__ import annotations

import subprocess
import sys

import pytest

from imgcls.cli import load_command
from imgcls.cli.serve import flag_name
from imgcls.serve.settings import ServeSettings

FROM_ENV_ONLY = {"admin_token"}  # IMGCLS_ADMIN_TOKEN: a token never goes on a command line


def options() -> dict[str, object]:
    return {p.opts[0]: p for p in load_command("serve").params if p.opts[0].startswith("--")}


def test_every_setting_is_a_flag_with_the_fields_default_range_and_help() -> None:
    flags = options()
    for field, info in ServeSettings.model_fields.items():
        if field in FROM_ENV_ONLY:
            assert flag_name(field) not in flags
            continue
        param = flags.pop(flag_name(field))
        default = None if info.is_required() else info.default
        if field == "allow_models":
            assert param.default in (None, [], ()), field  # type: ignore[attr-defined]
        else:
            assert param.default == default, field  # type: ignore[attr-defined]
        assert (param.help or "").startswith(" ".join((info.description or "").split())), field  # type: ignore[attr-defined]
        ge = next((r.ge for r in info.metadata if hasattr(r, "ge")), None)
        le = next((r.le for r in info.metadata if hasattr(r, "le")), None)
        assert (param.min, param.max) == (ge, le), field  # type: ignore[attr-defined]
    assert not flags, f"flags without a setting: {sorted(flags)}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout-s", "0"], "--timeout-s: Input should be greater than 0"),
        (["--watch", "0"], "--watch: Input should be greater than 0"),
        (["--device", "gpu"], "--device: Input should be 'auto', 'cpu', 'cuda' or 'tensorrt'"),
        (["--max-files", "0"], "--max-files"),
    ],
)
def test_a_value_outside_the_settings_range_names_the_flag(args: list[str], message: str, tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "imgcls", "serve", "--model", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
