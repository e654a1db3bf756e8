"""Every shipped config parses; bad keys and values are rejected with the key, a suggestion and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from imgcls.config import load_config
from imgcls.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
EXPECTED = {"cifar10", "cifar100", "cifar100-finetune", "digits", "fashion-mnist"}


def test_the_documented_configs_ship():
    assert {p.stem for p in CONFIGS} >= EXPECTED


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_parses(path: Path):
    cfg = load_config(path)
    assert cfg.train.epochs >= 1 and cfg.optim.lr > 0
    if path.stem.startswith("cifar100"):
        assert cfg.data.name == "cifar100" and cfg.train.device == "cuda"
    if path.stem == "cifar100-finetune":
        assert cfg.model.pretrained and (cfg.data.img_size or 0) > 32
    if path.stem in ("digits", "fashion-mnist"):
        assert cfg.train.device == "cpu"


def test_reference_recipe_is_a_cifar_stem_resnet18_or_better():
    cfg = load_config(ROOT / "configs" / "cifar100.yaml")
    assert cfg.model.arch in {"resnet18", "resnet26", "resnet34", "resnet50", "wide_resnet50_2", "resnet18d"}
    assert cfg.train.precision == "bf16" and cfg.model.small_input_stem in (None, True)


def test_set_overrides_and_flags_take_precedence():
    cfg = load_config(ROOT / "configs" / "digits.yaml", ["optim.lr=0.05", "augment.hflip=true"], {"train.epochs": 3})
    assert cfg.optim.lr == 0.05 and cfg.augment.hflip is True and cfg.train.epochs == 3


@pytest.mark.parametrize("override", ["optim.lr=inf", "optim.lr=.inf", "distributed.timeout_s=inf",
                                      "distributed.join_timeout_s=.inf", "optim.momentum=nan"])  # fmt: skip
def test_no_setting_takes_inf_or_nan(override):
    # --lr inf was accepted (inf > 0), and the run diverged at its second step
    with pytest.raises(ConfigError, match="Input should be a finite number"):
        load_config(ROOT / "configs" / "digits.yaml", [override])


def test_unknown_key_suggests_the_closest(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'optim.lrr'.*did you mean 'optim.lr'"):
        load_config(bad)


def _train(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imgcls", "train", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_cli_unknown_key_in_yaml_exits_2_with_suggestion(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  name: digits\ntrain:\n  epoch: 3\n")
    proc = _train("--config", str(bad), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "unknown key 'train.epoch'" in proc.stderr and "did you mean 'train.epochs'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_cli_bad_value_exits_2_naming_key_and_value(tmp_path):
    proc = _train("--set", "optim.lr=-1", cwd=tmp_path)
    assert proc.returncode == 2
    assert "bad value for 'optim.lr'" in proc.stderr and "-1" in proc.stderr
    proc = _train("--set", "optim.name=adam", cwd=tmp_path)
    assert proc.returncode == 2 and "'optim.name'" in proc.stderr and "adamw" in proc.stderr
    proc = _train("--epochs", "0", cwd=tmp_path)
    assert proc.returncode == 2 and "'train.epochs'" in proc.stderr
    proc = _train("--set", "optim.lr", cwd=tmp_path)
    assert proc.returncode == 2 and "key.sub=value" in proc.stderr
    proc = _train("--config", str(tmp_path / "missing.yaml"), cwd=tmp_path)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_config_leaves_and_diff_name_every_changed_key():
    from imgcls.config import RunConfig, config_leaves, load_config
    from imgcls.train.rundir import config_diff

    base = RunConfig().to_dict()
    changed = load_config(None, ["optim.lr=0.3", "train.epochs=2", "augment.hflip=false"]).to_dict()
    leaves = config_leaves(changed)
    assert leaves["optim.lr"] == 0.3 and leaves["train.epochs"] == 2 and "optim" not in leaves
    assert config_diff(base, changed) == (
        f"augment.hflip: True -> False, optim.lr: 0.1 -> 0.3, train.epochs: {base['train']['epochs']!r} -> 2"
    )
    assert config_diff(base, base) == ""


def test_a_config_that_is_not_text_is_a_config_error(tmp_path):
    bad = tmp_path / "garbage.yaml"
    bad.write_bytes(bytes(range(128, 256)) * 3)  # was "unexpected UnicodeDecodeError", exit 1
    with pytest.raises(ConfigError, match=r"garbage.yaml is not UTF-8 text") as info:
        load_config(bad)
    assert info.value.exit_code == 2 and "UTF-8" in info.value.hint
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("wandb:\n  project: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xe9 at position 21"):
        load_config(latin1)


def test_a_utf16_or_bom_config_parses(tmp_path):
    # PowerShell's `>` writes UTF-16 with a byte-order mark; Notepad may add a UTF-8 one
    text = "train:\n  epochs: 3\n"
    for name, data in [("u16.yaml", text.encode("utf-16")), ("bom.yaml", b"\xef\xbb\xbf" + text.encode())]:
        (tmp_path / name).write_bytes(data)
        assert load_config(tmp_path / name).train.epochs == 3


def test_a_config_read_is_bounded_and_only_from_a_regular_file(tmp_path):
    import os

    from imgcls.config import MAX_CONFIG_BYTES

    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.write(b"train:\n  epochs: 3\n")
        f.truncate(MAX_CONFIG_BYTES + 1)  # sparse: a 1 GB file was read whole (2 GB of memory)
    with pytest.raises(ConfigError, match=rf"big.yaml is {MAX_CONFIG_BYTES + 1:,} bytes; a config is at most"):
        load_config(big)
    with pytest.raises(ConfigError, match="is a directory, not a config file"):
        load_config(tmp_path)
    os.mkfifo(tmp_path / "fifo.yaml")  # opening it would block
    with pytest.raises(ConfigError, match=r"fifo\.yaml is not a regular file"):
        load_config(tmp_path / "fifo.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_cli_binary_config_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00")
    proc = _train("--config", str(bad), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "is not UTF-8 text" in proc.stderr and "unexpected" not in proc.stderr
    assert "Traceback" not in proc.stderr


def _laughs(depth: int) -> str:
    """A few hundred bytes of YAML whose aliases expand to 9**depth strings (the "billion laughs")."""
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, depth)]
    return "\n".join(lines) + f"\ndata:\n  name: *l{depth - 1}\n"


def test_yaml_aliases_that_expand_exponentially_are_refused(tmp_path):
    # 460 bytes at depth 10 took minutes and 6 GB formatting the error, before being killed
    bomb = tmp_path / "laughs.yaml"
    bomb.write_text(_laughs(6))
    with pytest.raises(ConfigError, match=r"laughs.yaml expands to more than 10,000 values") as info:
        load_config(bomb)
    assert info.value.exit_code == 2 and "alias" in info.value.hint
    aliases = "&a [&b [&c [" + ", ".join(["x"] * 22) + "], " + ", ".join(["*c"] * 30) + "], " + ", ".join(["*b"] * 30)
    with pytest.raises(ConfigError, match=r"--set train.epochs=.* expands to more than 10,000 values"):
        load_config(None, [f"train.epochs={aliases}]"])
    cyclic = tmp_path / "cyclic.yaml"
    cyclic.write_text("data:\n  name: &a [*a]\n")
    with pytest.raises(ConfigError, match="expands to more than"):
        load_config(cyclic)


def test_yaml_nested_too_deeply_is_a_config_error(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("data:\n  name: " + "[" * 20000 + "]" * 20000 + "\n")  # was "unexpected RecursionError"
    with pytest.raises(ConfigError, match=r"deep\.yaml is nested too deeply"):
        load_config(deep)
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(None, ["train.epochs=" + "[" * 5000 + "]" * 5000])


def test_a_bad_value_is_shown_shortened(tmp_path):
    long = tmp_path / "long.yaml"
    long.write_text("data:\n  img_size: [" + ", ".join(["12345678"] * 5000) + "]\n")
    with pytest.raises(ConfigError, match=r"bad value for 'data.img_size'") as info:
        load_config(long)
    assert len(info.value.message) < 400 and "..." in info.value.message


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    # the second `train:` replaced the whole first section: epochs silently went back to the default
    twice = tmp_path / "twice.yaml"
    twice.write_text("train:\n  epochs: 30\ndata:\n  name: digits\ntrain:\n  batch_size: 64\n")
    with pytest.raises(ConfigError, match=r"twice.yaml: key 'train' is given twice \(lines 1 and 5\)") as info:
        load_config(twice)
    assert info.value.exit_code == 2 and "one 'train'" in info.value.hint
    leaf = tmp_path / "leaf.yaml"
    leaf.write_text("optim:\n  lr: 0.1\n  momentum: 0.9\n  lr: 0.5\n")
    with pytest.raises(ConfigError, match=r"key 'optim.lr' is given twice \(lines 2 and 4\)"):
        load_config(leaf)
    merged = tmp_path / "merged.yaml"  # a merge key's values may be overridden: that is what it is for
    merged.write_text("train:\n  <<: {epochs: 3, batch_size: 32}\n  epochs: 5\n")
    cfg = load_config(merged)
    assert (cfg.train.epochs, cfg.train.batch_size) == (5, 32)


def test_set_takes_a_text_key_as_typed():
    # YAML read ' #2' as a comment: --set "data.name=folder:/data/cats #2" trained on folder:/data/cats
    cfg = load_config(None, ["data.name=folder:/data/cats #2", "data.dir=2024", "name=007", "out=runs/a: b"])
    assert cfg.data.name == "folder:/data/cats #2" and cfg.data.dir == Path("2024")
    assert cfg.name == "007" and cfg.out == Path("runs/a: b")
    cfg = load_config(
        None, ["wandb.entity=null", "wandb.project='my project'", 'model.arch="resnet8"', "data.name=yes"]
    )
    assert cfg.wandb.entity is None and cfg.wandb.project == "my project" and cfg.model.arch == "resnet8"
    assert cfg.data.name == "yes"  # a dataset the loader will refuse by name, not a boolean
    assert load_config(None, ["train.epochs=3", "optim.lr=0.5"]).train.epochs == 3  # other keys still YAML


def test_a_text_value_round_trips_through_override_text():
    from imgcls.config import override_text

    for value in ["folder:/data/cats #2", "007", "it's", "'quoted'", "a: b", "null"]:
        assert load_config(None, [override_text("data.name", value)]).data.name == value


def test_a_number_where_text_is_meant_in_yaml_says_to_quote_it(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("wandb:\n  project: 2024\n")
    with pytest.raises(ConfigError, match=r"bad value for 'wandb.project'.*2024") as info:
        load_config(cfg)
    assert "quote" in info.value.hint and "'2024'" in info.value.hint


@pytest.mark.parametrize(
    ("text", "near"),
    [("trian:\n  epochs: 3\n", "train"), ("optimizer:\n  lr: 0.1\n", "optim"), ("Train:\n  epochs: 3\n", "train"),
     ("data:\n  Img_Size: 32\n", "data.img_size"), ("epochs: 3\n", "train.epochs")],
)  # fmt: skip
def test_a_misspelt_section_suggests_the_section(tmp_path, text, near):
    # 'trian:' got no suggestion and 'optimizer:' got 'optim.lr'
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=rf"did you mean '{near}'\?") as info:
        load_config(bad, [], {"data.name": None})
    assert "(+ overrides)" not in info.value.message  # no override was given: a flag left out is none


@pytest.mark.parametrize(
    "override",
    ["train.epochs=yes", "data.channels=true", "optim.momentum=no", "optim.grad_clip=on", "train.max_steps=true",
     "augment.crop_padding=off"],
)  # fmt: skip
def test_a_boolean_is_not_a_number(override):
    # YAML reads yes/no/on/off as booleans, and pydantic took True for 1: --set train.epochs=yes trained 1 epoch
    with pytest.raises(ConfigError, match=r"bad value for .*(True|False).*true/false, not a number"):
        load_config(None, [override])


def test_booleans_still_set_boolean_keys():
    cfg = load_config(None, ["augment.hflip=no", "model.pretrained=yes", "train.compile=false"])
    assert cfg.augment.hflip is False and cfg.model.pretrained is True and cfg.train.compile is False


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2024-13-45", "holds a value YAML reads as a date or number that cannot be one (month must be in 1..12)"),
        ("1" + "0" * 5000, "holds a value YAML reads as a date or number that cannot be one (Exceeds the limit"),
        # YAML reads it; the message naming it cannot write it in decimal
        ("0x" + "f" * 5000, "'data.img_size' in "),
    ],
    ids=["impossible-date", "5001-digit-int", "5000-digit-hex"],
)
def test_a_value_python_cannot_make_or_show_is_a_config_error(tmp_path, value, message):
    text = (ROOT / "configs" / "digits.yaml").read_text().replace("  img_size: 16", f"  img_size: {value}")
    assert value in text
    (tmp_path / "c.yaml").write_text(text)
    r = _train("--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr, r.stderr  # was an unexpected ValueError, exit 1
    assert "Traceback" not in r.stderr and "unexpected" not in r.stderr and not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match=r"data\.img_size"):  # --set reads it as text, refused for a number
        load_config(ROOT / "configs" / "digits.yaml", [f"data.img_size={value}"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # the first batch padded by 10**6 on every side: torch was asked for 256 TB ("unexpected RuntimeError")
        ("augment.crop_padding=1000000", "'augment.crop_padding'"),
        ("train.seed=1180591620717411303424", "'train.seed'"),  # 2**70: torch.manual_seed's OverflowError
        ("train.epochs=0x" + "f" * 5000, "'train.epochs'"),  # failed writing config.yaml, after the data loaded
    ],
    ids=["crop-padding", "seed", "epochs"],
)
def test_an_absurd_number_is_refused_before_the_run_starts(tmp_path, override, message):
    r = _train("--config", str(ROOT / "configs" / "digits.yaml"), "--set", override, "--out", str(tmp_path / "o"),
               cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and f"bad value for {message}" in r.stderr, r.stderr
    assert "Input should be less than or equal to" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()
