"""Every path key of every command resolves as the README says, before any work
(kopretrain/paths.py: PATH_KEYS, resolve_config_paths; the CLI applies it before the command runs).

Each test runs in a temporary launch directory holding the inputs under relative names, so a
relative value can only resolve if it is taken from the launch directory."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from kopretrain.cli import compose_typed
from kopretrain.config import SCHEMAS, schema_class
from kopretrain.errors import UserError
from kopretrain.paths import PATH_KEYS, PROJECT_ROOT, is_uri, resolve_config_paths

SMOKE = PROJECT_ROOT / "data/smoke"
PATHISH = ("path", "dir", "corpus", "base", "reference", "extra_model", "heldout", "tokenizer", "name_or_path")


def _path_like_fields(cls, prefix: str = "") -> set[str]:
    """Dotted names of the str/list/dict fields of a schema whose name says they hold paths."""
    found = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        if dataclasses.is_dataclass(hint):
            found |= _path_like_fields(hint, f"{prefix}{f.name}.")
        elif item is not None and dataclasses.is_dataclass(item):
            found |= _path_like_fields(item, f"{prefix}{f.name}[].")
        elif hint is not bool and (f.name.split("_")[-1] in PATHISH or f.name in PATHISH):  # not optim.lr_relative_to_base
            found.add(f"{prefix}{f.name}")
    return found


@pytest.mark.parametrize("command", sorted(SCHEMAS))
def test_every_path_key_of_every_schema_is_in_the_table(command):
    table = {k.removesuffix("[]").removesuffix(".*") for k in PATH_KEYS[command]}
    found = _path_like_fields(schema_class(command)) - {"tracking.uri"}  # kopretrain.tracking resolves it
    assert found == table


@pytest.fixture
def launch_dir(tmp_path, monkeypatch) -> Path:
    """A launch directory with every kind of input under rel/, and the process inside it."""
    rel = tmp_path / "rel"
    rel.mkdir()
    (rel / "ko.jsonl").write_text('{"text": "안녕하세요. 오늘은 날씨가 좋네요."}\n', encoding="utf-8")
    (rel / "en.jsonl").write_text('{"text": "The weather is fine today."}\n', encoding="utf-8")
    (rel / "words.txt").write_text("나쁜말\n", encoding="utf-8")
    (rel / "heldout.txt").write_text("안녕하세요\n", encoding="utf-8")
    (rel / "corpus").mkdir()
    (rel / "kobest").mkdir()
    (rel / "corpus/a.txt").write_text("한국어 문장\n", encoding="utf-8")
    shutil.copy(SMOKE / "tokenizer/tokenizer.model", rel / "spm.model")
    for name in ("tokenizer", "model", "tokens"):
        shutil.copytree(SMOKE / name, rel / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


SOURCES = "sources=[{name: k, path: rel/ko.jsonl, domain: ko}, {name: e, path: rel/en.jsonl, domain: en}]"
HELDOUT = ["heldout.ko=rel/heldout.txt", "heldout.en=rel/heldout.txt"]
# command -> (overrides giving every path key a relative value, {key: expected path under the launch dir})
CASES = {
    "prepare": ([SOURCES, "output_dir=out/p", "tokens_dir=out/t", "tokenizer.path=rel/tokenizer",
                 "clean.filter.bad_words_path=rel/words.txt"],
                {"sources[].path": ["rel/ko.jsonl", "rel/en.jsonl"], "output_dir": "out/p", "tokens_dir": "out/t",
                 "tokenizer.path": "rel/tokenizer", "clean.filter.bad_words_path": "rel/words.txt"}),
    "tokenizer": (["base=rel/spm.model", "corpus=rel/corpus", "output_dir=out/tok", "extra_model=rel/spm.model",
                   "train_base.corpus=rel/corpus/a.txt", *HELDOUT, "reference=rel/tokenizer",
                   "model_dir=rel/model"],
                  {"base": "rel/spm.model", "corpus[]": "rel/corpus", "output_dir": "out/tok", "extra_model": "rel/spm.model",
                   "train_base.corpus": "rel/corpus/a.txt", "heldout.*": "rel/heldout.txt", "reference": "rel/tokenizer",
                   "model_dir": "rel/model"}),
    "train": (["model=pretrained", "model.name_or_path=rel/model", "tokenizer=rel/tokenizer", "data.tokens_dir=rel/tokens",
               "output_dir=out/train", "checkpoint.storage_path=ckpts", *(f"eval.{h}" for h in HELDOUT),
               "model.safetensors_dir=out/st", "eval.kobest_data_dir=rel/kobest"],
              {"model.name_or_path": "rel/model", "tokenizer": "rel/tokenizer", "data.tokens_dir": "rel/tokens",
               "output_dir": "out/train", "checkpoint.storage_path": "ckpts", "eval.heldout.*": "rel/heldout.txt",
               "model.safetensors_dir": "out/st", "eval.kobest_data_dir": "rel/kobest"}),
    "eval": (["model_dir=rel/model", "tokenizer_dir=rel/tokenizer", "base_model_dir=rel/model",
              "base_tokenizer_dir=rel/tokenizer", *HELDOUT, "kobest.data_dir=rel/kobest"],
             {"model_dir": "rel/model", "tokenizer_dir": "rel/tokenizer", "base_model_dir": "rel/model",
              "base_tokenizer_dir": "rel/tokenizer", "heldout.*": "rel/heldout.txt", "kobest.data_dir": "rel/kobest"}),
    "demo": ([SOURCES, "work_dir=out/demo", *HELDOUT],
             {"sources[].path": ["rel/ko.jsonl", "rel/en.jsonl"], "work_dir": "out/demo", "heldout.*": "rel/heldout.txt"}),
}


def values_at(cfg, dotted: str) -> list:
    """Every value at a PATH_KEYS key (`[]` and `*` expand)."""
    nodes = [cfg]
    for part in dotted.split("."):
        if part == "*":
            nodes = [v for n in nodes for v in n.values()]
        elif part.endswith("[]"):
            nodes = [v for n in nodes for v in getattr(n, part[:-2])]
        else:
            nodes = [getattr(n, part) for n in nodes]
    return nodes


@pytest.mark.parametrize("command", sorted(CASES))
def test_every_path_key_resolves_from_the_launch_directory(launch_dir, command):
    overrides, expected = CASES[command]
    assert set(expected) == set(PATH_KEYS[command]), "give every path key of the command a relative value"
    if command == "train":
        overrides = ["tracking.enabled=false", *overrides]
    cfg = resolve_config_paths(command, compose_typed(command, overrides))
    for key, rel in expected.items():
        rels = rel if isinstance(rel, list) else [rel] * len(values_at(cfg, key))
        assert values_at(cfg, key) == [str(launch_dir / r) for r in rels] and rels, key


def test_uris_and_hub_ids_stay_and_shipped_defaults_fall_back_to_the_project(launch_dir):
    cfg = resolve_config_paths("train", compose_typed("train", [
        "experiment=smoke", "model=pretrained", "model.name_or_path=someorg/some-model",
        "checkpoint.storage_path=s3://bucket/ckpts", "output_dir=data"]))
    assert cfg.model.name_or_path == "someorg/some-model" and cfg.checkpoint.storage_path == "s3://bucket/ckpts"
    with pytest.raises(UserError, match=r"^model\.name_or_path: \./nope: no such directory \(relative paths .*hub id$"):
        resolve_config_paths("train", compose_typed("train", ["experiment=smoke", "model=pretrained", "model.name_or_path=./nope"]))
    assert cfg.tokenizer == str(PROJECT_ROOT / "data/smoke/tokenizer")  # experiment=smoke's relative default
    assert cfg.output_dir == str(launch_dir / "data"), "outputs never fall back to the project root"
    assert is_uri("gs://b/x") and is_uri("file:///tmp/x") and is_uri("hdfs://nn/x") and not is_uri("ckpts")
    ev = resolve_config_paths("eval", compose_typed("eval", ["model_dir=rel/model", "heldout.ko='rel/*.txt'"]))
    assert ev.heldout == {"ko": str(launch_dir / "rel/*.txt"), "en": str(PROJECT_ROOT / "data/heldout/en.txt")}


@pytest.mark.parametrize("command,override,message", [
    ("eval", "base_model_dir=nope", "base_model_dir: 'nope' does not exist"),
    ("eval", "heldout.ko='rel/*.none'", "heldout.ko: no files match 'rel/*.none'"),
    ("train", "data.tokens_dir=nope", "data.tokens_dir: 'nope' does not exist"),
    ("tokenizer", "corpus=[rel/corpus, gone]", r"corpus\[1\]: 'gone' does not exist"),
    ("prepare", "clean.filter.bad_words_path=nope.txt", "clean.filter.bad_words_path: 'nope.txt' does not exist"),
])
def test_a_missing_input_is_one_line_naming_its_key(launch_dir, command, override, message):
    base = {"eval": ["model_dir=rel/model"], "train": ["experiment=smoke"], "tokenizer": ["base=rel/spm.model"],
            "prepare": [SOURCES]}[command]
    with pytest.raises(UserError, match="^" + message.replace("*", r"\*").replace(".", r"\.")):
        resolve_config_paths(command, compose_typed(command, [*base, override]))


def test_cli_checks_paths_before_ray_starts(launch_dir):
    """Before, a missing bad-words file failed inside the Ray Data tasks."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-m", "kopretrain", "prepare", SOURCES, "clean.filter.bad_words_path=nope.txt",
                          "tracking.enabled=false", "hydra.run.dir=run"], cwd=launch_dir, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.strip().splitlines() == [
        "kopretrain prepare: error: clean.filter.bad_words_path: 'nope.txt' does not exist "
        "(relative paths are taken from the launch directory, then from the project root)"]
    assert "Ray" not in out.stdout


@pytest.mark.ray
def test_relative_checkpoint_storage_path_trains_into_the_launch_directory(ray_local, launch_dir):
    from kopretrain.train.command import run_train
    from tests.train.conftest import smoke_cfg

    cfg = smoke_cfg("checkpoint.storage_path=ckpts", "num_steps=2", "optim.lr_warmup_steps=1", "strategy=ddp")
    report = run_train(cfg, Path("run"))
    assert report["ray_train_path"] == str(launch_dir / "ckpts/train")
    assert [p.name for p in (launch_dir / "ckpts/train").glob("checkpoint_*/train_state.json")] == ["train_state.json"]
    assert report["model_path"] == str(launch_dir / "run/model") and (launch_dir / "run/report.json").is_file()


@pytest.mark.parametrize("argv,key", [
    (["prepare", "output_dir=ro_file/x"], "output_dir"),
    (["prepare", "tokens_dir=ro_file/x"], "tokens_dir"),
    (["tokenizer", "base=rel/spm.model", "output_dir=ro_file/x"], "output_dir"),
    (["eval", "model_dir=rel/model", "hydra.run.dir=ro_file/x"], "hydra.run.dir"),
    (["train", "experiment=smoke", "checkpoint.storage_path=ro_file/x"], "checkpoint.storage_path"),
    (["train", "experiment=smoke", "output_dir=ro_file/x"], "output_dir"),
    (["demo", "work_dir=ro_file/x"], "work_dir"),
])
def test_an_unwritable_output_is_one_line_before_any_work(launch_dir, argv, key, monkeypatch, capsys):
    """Before, each was a NotADirectoryError traceback (train with output_dir: after training every step)."""
    from tests.test_cli_errors import run_in_process

    (launch_dir / "ro_file").write_text("")
    before = {p for p in launch_dir.rglob("*")}
    code, err = run_in_process([*argv, "tracking.enabled=false"], launch_dir, monkeypatch, capsys)
    assert (code, err) == (2, [f"kopretrain {argv[0]}: error: {key}: cannot write to ro_file/x (ro_file is a file)"])
    made = [p.relative_to(launch_dir) for p in set(launch_dir.rglob("*")) - before]
    assert all(p.parts[0] == "outputs" for p in made), made  # at most Hydra's own run dir


def test_a_read_only_directory_is_not_writable(launch_dir):
    ro = launch_dir / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
        with pytest.raises(UserError, match=r"^output_dir: cannot write to ro/x/y \(ro is not writable\)$"):
            resolve_config_paths("prepare", compose_typed("prepare", [SOURCES, "output_dir=ro/x/y"]))
    finally:
        ro.chmod(0o700)
