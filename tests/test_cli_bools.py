"""A bool config field given anything but true/false (or 0/1) on the command line is one line naming
the key: OmegaConf alone reads `strategy.compile=2` or `tracking.enabled=yes` as true, silently.
Hydra's flags (--cfg, --help) with a bad override, or -m, are one line too; --help into a closed pipe
is no traceback."""

from __future__ import annotations

import pytest

from kopretrain.cli import compose_typed
from kopretrain.config import _is_bool_field
from kopretrain.config.train import TrainConfig
from kopretrain.errors import ConfigError
from tests.test_cli_errors import run_in_process


@pytest.mark.parametrize("override,key,shown", [
    ("strategy.compile=2", "strategy.compile", "2"),
    ("strategy.compile=-1", "strategy.compile", "-1"),
    ("strategy.compile=yes", "strategy.compile", "yes"),
    ("tracking.enabled=on", "tracking.enabled", "on"),
    ("data.allow_changed_data=n", "data.allow_changed_data", "n"),
    ("ray.verbose=1.0", "ray.verbose", "1.0"),
])
def test_a_non_boolean_for_a_bool_field_names_the_key(override, key, shown):
    with pytest.raises(ConfigError, match=f"^{key}: {shown} is not a boolean \\(true or false\\)$"):
        compose_typed("train", ["experiment=smoke", override])


@pytest.mark.parametrize("value,expected", [("true", True), ("False", False), ("1", True), ("0", False), ("'true'", True)])
def test_booleans_and_0_1_are_read_as_before(value, expected):
    assert compose_typed("train", ["experiment=smoke", f"strategy.compile={value}"]).strategy.compile is expected


def test_only_bool_fields_are_checked():
    assert _is_bool_field(TrainConfig, ["strategy", "compile"]) and _is_bool_field(TrainConfig, ["ray", "verbose"])
    assert not _is_bool_field(TrainConfig, ["num_steps"]) and not _is_bool_field(TrainConfig, ["strategy"])
    assert not _is_bool_field(TrainConfig, ["hydra", "run", "dir"]) and not _is_bool_field(TrainConfig, ["mix", "weights", "ko"])
    assert compose_typed("train", ["experiment=smoke", "num_steps=2"]).num_steps == 2


@pytest.mark.parametrize("argv", [["train", "experiment=smoke", "strategy.compile=2"],
                                  ["train", "-m", "experiment=smoke", "strategy.compile=false,2"],
                                  ["eval", "experiment=smoke", "tracking.enabled=yes"]])
def test_the_cli_says_it_in_one_line_before_anything_runs(argv, tmp_path, monkeypatch, capsys):
    code, err = run_in_process(argv, tmp_path, monkeypatch, capsys)
    key, value = argv[-1].split("=")
    assert code == 2 and err == [f"kopretrain {argv[0]}: error: {key}: {value.split(',')[-1]} is not a boolean (true or false)"]
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


@pytest.mark.parametrize("argv,expected", [
    (["train", "--cfg", "job", "mix.replay_rato=0.2"], "unknown config key 'mix.replay_rato'"),
    (["eval", "--help", "-m", "model_dir=x", "batch_size=2,abc"], "bad value for 'batch_size'"),
    (["train", "--cfg", "job", "strategy.compile=yes"], "strategy.compile: yes is not a boolean (true or false)"),
    (["train", "--cfg", "job", "-m", "mix.replay_ratio=0.1,0.2"], "-m cannot be combined with --cfg or --info"),
])
def test_hydra_flags_with_a_bad_override_are_one_line(argv, expected, tmp_path, monkeypatch, capsys):
    """Not Hydra's own multi-line 'Could not override ...' message."""
    code, err = run_in_process(argv, tmp_path, monkeypatch, capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"kopretrain {argv[0]}: error: {expected}"), err


def test_cfg_job_still_prints_a_config_its_values_not_validated(tmp_path):
    """`kopretrain train --cfg job` prints the default config, whose data.tokens_dir is still unset."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "kopretrain", "train", "--cfg", "job", "optim.lr=0.5"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "lr: 0.5" in out.stdout and "tokens_dir:" in out.stdout, out.stderr[-2000:]


def test_help_into_a_closed_pipe_is_no_traceback(tmp_path):
    """`kopretrain train --help | head -1`: Hydra's own printing into a pipe whose reader exited."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        out = subprocess.run([sys.executable, "-m", "kopretrain", "train", "--help"], cwd=tmp_path, stdout=write_end,
                             stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert out.returncode == 0 and out.stderr == ""
