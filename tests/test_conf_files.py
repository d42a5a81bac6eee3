"""Every shipped Hydra YAML composes against its command's schema and passes validation:
each command's defaults, each option of each config group it uses, each experiment recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kopretrain.cli import COMMANDS, compose_typed
from kopretrain.errors import UserError
from kopretrain.paths import CONF_DIR

# Values a command cannot default (the user must say which model to evaluate, ...).
REQUIRED = {
    "eval": ["model_dir=unused"],
    "tokenizer": ["base=unused"],
    "train": ["data.tokens_dir=unused", "tokenizer=unused", "model.name_or_path=unused"],
}
NOT_GROUPS = {"hydra", "experiment"}
# Options that are valid files but wrong for a command, by design: they must fail cleanly.
EXPECTED_ERRORS = {
    ("demo", "source=sample_ko"): "sources: need domains ko and en",
    ("demo", "source=sample_en"): "sources: need domains ko and en",
    # 8-bit AdamW cannot step FSDP2's DTensor shards, and fsdp is the default strategy
    # (tests/train/test_config.py composes it with strategy=ddp)
    ("train", "optim=adamw_8bit"): r"optim.name: adamw_8bit runs with strategy=local\|ddp",
}


def _groups_of(command: str) -> list[str]:
    defaults = yaml.safe_load((CONF_DIR / f"{command}.yaml").read_text()).get("defaults", [])
    groups = []
    for entry in defaults:
        if isinstance(entry, dict):
            key = next(iter(entry)).split("@")[0].replace("optional ", "").strip()
            if key.split("/")[0] not in NOT_GROUPS:
                groups.append(key)
    return groups


def _cases():
    for command in COMMANDS:
        yield pytest.param(command, [], id=f"{command}-defaults")
        for group in _groups_of(command):
            for option in sorted((CONF_DIR / group).glob("*.yaml")):
                yield pytest.param(command, [f"{group}={option.stem}"], id=f"{command}-{group}={option.stem}")
        for recipe in sorted((CONF_DIR / "experiment" / command).glob("*.yaml")):
            yield pytest.param(command, [f"experiment={recipe.stem}"], id=f"{command}-experiment={recipe.stem}")


def test_every_command_has_a_config():
    assert sorted(p.stem for p in CONF_DIR.glob("*.yaml")) == sorted(COMMANDS)


@pytest.mark.parametrize("command,overrides", list(_cases()))
def test_config_composes_and_validates(command, overrides):
    expected = EXPECTED_ERRORS.get((command, *overrides))
    if expected:
        with pytest.raises(UserError, match=expected):
            compose_typed(command, REQUIRED.get(command, []) + overrides)
        return
    cfg = compose_typed(command, REQUIRED.get(command, []) + overrides)
    assert type(cfg).__name__.endswith("Config")


def test_every_yaml_file_is_covered():
    """A YAML under conf/ that no test composes is dead config: fail so it gets a test or goes."""
    covered = {CONF_DIR / f"{c}.yaml" for c in COMMANDS} | {CONF_DIR / "hydra" / "kopretrain.yaml"}
    covered |= {CONF_DIR / "experiment" / "none.yaml", CONF_DIR / "experiment" / "smoke.yaml"}
    for command in COMMANDS:
        for group in _groups_of(command):
            covered |= set((CONF_DIR / group).glob("*.yaml"))
        covered |= set((CONF_DIR / "experiment" / command).glob("*.yaml"))
    shipped = set(Path(CONF_DIR).rglob("*.yaml"))
    assert sorted(map(str, shipped - covered)) == []
