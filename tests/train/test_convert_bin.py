"""`.bin` checkpoints take the sharded path (kopretrain/train/convert_bin.py): the driver converts the
shards to safetensors once (reused when done, redone when interrupted), and the workers then load
in place exactly as from a safetensors checkpoint: the weights bitwise and the first loss of the
full load, here for a replica in one process (FSDP2 on 2 Ray Train workers: test_model_init.py).
Tied weights (one storage, two names) lose the name the model re-ties; bad input is one line
naming the file."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from kopretrain.errors import UserError
from kopretrain.train.convert_bin import CONVERTING, MARKER, convert_bin, describe, prepare_weights, savable
from kopretrain.train.model import build_model, plan_model
from tests.train.conftest import expanded_overrides, save_as_bin, smoke_cfg

def _copy_without_weights(src: Path, out: Path) -> Path:
    out.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors"):
            shutil.copy(f, out / f.name)
    return out


@pytest.fixture(scope="module")
def bin_dir(base_model_dir, tmp_path_factory) -> Path:
    """The tiny base as pytorch_model-0000k-of-0000n.bin + pytorch_model.bin.index.json (no safetensors)."""
    out = save_as_bin(base_model_dir, tmp_path_factory.mktemp("bin") / "base")
    assert len(list(out.glob("pytorch_model-*.bin"))) >= 3 and (out / "pytorch_model.bin.index.json").is_file()
    return out


def _plan(model_dir: Path, safetensors_dir: str = ""):
    cfg = smoke_cfg(*expanded_overrides(model_dir), f"model.safetensors_dir={safetensors_dir}")
    return plan_model(cfg), cfg.model.safetensors_dir


def test_bin_shards_convert_once_to_the_tensors_of_the_safetensors_checkpoint(base_model_dir, bin_dir, tmp_path):
    from safetensors.torch import load_file

    from kopretrain.train.model_init import sharded_checkpoint

    work = tmp_path / "m"
    shutil.copytree(bin_dir, work)
    plan, key = _plan(work)
    assert key == "" and sharded_checkpoint(plan) == (None, "no safetensors")
    info = prepare_weights(plan, key)
    out = work / "safetensors"
    assert plan.safetensors_dir == str(out) and info["where"] == str(out) and info["reused"] is False
    assert info["source"].startswith("pytorch_model-00001-of-") and info["dropped"] == []
    assert describe(info) == f"{info['source']} converted to safetensors in {info['seconds']:.1f} s: {out}"  # report.json load
    ref = load_file(base_model_dir / "model.safetensors")
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert index.keys() == ref.keys() and len(set(index.values())) == len(list(work.glob("pytorch_model-*.bin")))
    for name, value in ref.items():
        got = load_file(out / index[name])[name]
        assert got.dtype == value.dtype and torch.equal(got, value), name
    ckpt, why = sharded_checkpoint(plan)
    assert why == "" and ckpt.files == {k: out / v for k, v in index.items()}

    written = {f.name: f.stat().st_mtime_ns for f in out.glob("*.safetensors")}
    again = prepare_weights(plan, key)
    assert again["reused"] is True and again["dropped"] == [] and {f.name: f.stat().st_mtime_ns for f in out.glob("*.safetensors")} == written

    assert not (out / CONVERTING).exists()  # removed once the marker is written
    # interrupted after a shard (what an interrupted run leaves: no marker, the in-progress one), with a
    # stale half-written file: redone from scratch
    (out / MARKER).unlink()
    (out / CONVERTING).touch()
    first = sorted(out.glob("*.safetensors"))[0]
    first.write_bytes(b"partial")
    (out / "model-00009-of-00009.safetensors.part").write_bytes(b"x")
    redone = prepare_weights(plan, key)
    assert redone["reused"] is False and not list(out.glob("*.part")) and not (out / CONVERTING).exists()
    assert all(torch.equal(load_file(out / index[k])[k], v) for k, v in ref.items())
    # a source shard rewritten since: the marker no longer matches, converted again
    src = sorted(work.glob("pytorch_model-*.bin"))[0]
    src.write_bytes(src.read_bytes())
    assert prepare_weights(plan, key)["reused"] is False


def test_a_replica_loads_the_converted_bin_in_place_with_the_weights_and_loss_of_the_full_load(bin_dir, tmp_path):
    from kopretrain.train.strategies import strategy_class
    from kopretrain.train.strategies.base import StrategySettings

    plan, _ = _plan(bin_dir, str(tmp_path / "elsewhere"))  # the model directory itself is left untouched
    ref, _ = build_model(plan, seed=0)  # the full load, from the .bin files (transformers)
    assert prepare_weights(plan, str(tmp_path / "elsewhere"))["where"] == str(tmp_path / "elsewhere")
    assert not (bin_dir / "safetensors").exists()
    strategy = strategy_class("local")(StrategySettings(device=torch.device("cpu")))
    info = strategy.build(plan, seed=0)
    assert info["load"] == "in place" and info["vocab_size"] == 2048
    got = strategy.module.state_dict()
    assert got.keys() == ref.state_dict().keys() and all(torch.equal(got[k], v) for k, v in ref.state_dict().items())
    x = torch.randint(0, 2000, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert float(strategy.module(input_ids=x, labels=x).loss) == float(ref(input_ids=x, labels=x).loss)


def test_tied_weights_keep_one_name_and_load_tied(base_model_dir, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    from kopretrain.train.strategies import strategy_class
    from kopretrain.train.strategies.base import StrategySettings

    tied = _copy_without_weights(base_model_dir, tmp_path / "tied")
    config = AutoConfig.from_pretrained(base_model_dir)
    config.tie_word_embeddings = True
    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_config(config)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    config.save_pretrained(tied)
    torch.save(model.state_dict(), tied / "pytorch_model.bin")  # both names, one storage (as older checkpoints ship)
    plan, _ = _plan(tied)
    ref, _ = build_model(plan, seed=0)
    info = prepare_weights(plan, "")
    assert info["dropped"] == ["lm_head.weight"] and info["source"] == "pytorch_model.bin"
    strategy = strategy_class("local")(StrategySettings(device=torch.device("cpu")))
    assert strategy.build(plan, seed=0)["load"] == "in place"
    m = strategy.module
    assert m.lm_head.weight is m.model.embed_tokens.weight
    assert all(torch.equal(m.state_dict()[k], v) for k, v in ref.state_dict().items())


def test_aliases_the_model_does_not_retie_are_saved_as_copies():
    w = torch.arange(12.0).reshape(3, 4)
    out, dropped = savable({"a": w, "b": w, "c": w[1:], "d": torch.ones(2)}, {"b"})
    assert dropped == ["b"] and sorted(out) == ["a", "c", "d"]
    assert torch.equal(out["c"], w[1:]) and out["c"].untyped_storage().data_ptr() != w.untyped_storage().data_ptr()
    out, dropped = savable({"a": w, "b": w}, set())
    assert dropped == [] and torch.equal(out["b"], w) and out["b"].data_ptr() != out["a"].data_ptr()


class NotATensor:
    pass


def test_bad_input_is_one_line_naming_the_file(bin_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    torch.save({"w": torch.zeros(2), "obj": NotATensor()}, bad / "pytorch_model.bin")
    with pytest.raises(UserError, match=rf"^model.name_or_path: torch.load\(weights_only=True\) refuses {re.escape(str(bad))}/pytorch_model.bin: "
                                        r"it pickles [\w.]*NotATensor, not only tensors \(kopretrain loads no code from a checkpoint\)$") as e:
        convert_bin(bad, tmp_path / "out")
    assert "\n" not in str(e.value) and "False" not in str(e.value)

    # not a checkpoint at all: said so, naming the file, never torch's hint to load it with weights_only=False
    (bad / "pytorch_model.bin").write_bytes(b"garbage")
    with pytest.raises(UserError, match=rf"^model.name_or_path: {re.escape(str(bad))}/pytorch_model.bin is not a readable "
                                        r"PyTorch checkpoint \(neither of the formats torch.save writes\)$"):
        convert_bin(bad, tmp_path / "out2")
    good = tmp_path / "good.bin"
    torch.save({"w": torch.zeros(1000)}, good)
    (bad / "pytorch_model.bin").write_bytes(good.read_bytes()[:2000])  # a truncated download
    with pytest.raises(UserError, match=rf"^model.name_or_path: {re.escape(str(bad))}/pytorch_model.bin is not a readable "
                                        r"PyTorch checkpoint \(.*zip archive.*; truncated or corrupt\?\)$") as e:
        convert_bin(bad, tmp_path / "out3")
    assert "weights_only" not in str(e.value) and "\n" not in str(e.value)

    missing = tmp_path / "missing"
    shutil.copytree(bin_dir, missing)
    victim = sorted(missing.glob("pytorch_model-*.bin"))[1]
    victim.unlink()
    plan, _ = _plan(bin_dir)
    plan.name_or_path = str(missing)
    with pytest.raises(UserError, match=rf"^model.name_or_path: {re.escape(str(victim))} is named in pytorch_model.bin.index.json but missing$"):
        prepare_weights(plan, "")

    plan.name_or_path = str(bin_dir)
    with pytest.raises(UserError, match=r"^model.safetensors_dir: cannot write the converted safetensors to .*; set model.safetensors_dir"):
        prepare_weights(plan, str(bad / "pytorch_model.bin" / "sub"))  # below a file
    blocked = tmp_path / "blocked"
    shutil.copytree(bin_dir, blocked)
    (blocked / "safetensors").write_text("")  # the default folder cannot be made (a read-only model dir alike)
    plan.name_or_path = str(blocked)
    with pytest.raises(UserError, match=rf"^model.safetensors_dir: cannot write the converted safetensors to the default "
                                        rf"{re.escape(str(blocked / 'safetensors'))} \(inside the model directory\)"):
        prepare_weights(plan, "")


def _sharded_safetensors_model(out: Path) -> dict[str, bytes]:
    """Another model's folder: safetensors shards + index + config, as a download holds it; {name: bytes}."""
    from safetensors.torch import save_file

    out.mkdir()
    save_file({"a": torch.ones(3)}, str(out / "model-00001-of-00002.safetensors"))
    save_file({"b": torch.zeros(2)}, str(out / "model-00002-of-00002.safetensors"))
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    (out / "config.json").write_text("{}")
    return {f.name: f.read_bytes() for f in out.iterdir()}


def test_a_folder_of_another_model_is_refused_and_left_untouched(bin_dir, tmp_path):
    """model.safetensors_dir naming a folder kopretrain did not write (no marker): one line before any write,
    its files are not removed or overwritten (not even the lock or a write probe is left there)."""
    victim = tmp_path / "victim"
    before = _sharded_safetensors_model(victim)
    plan, _ = _plan(bin_dir, str(victim))
    message = (rf"^model.safetensors_dir: {re.escape(str(victim))} already holds files kopretrain's conversion did not write "
               r"\(config.json, model-00001-of-00002.safetensors, model-00002-of-00002.safetensors, \.\.\. \(4 in all\); "
               r"no kopretrain_converted.json\); set it to an empty or new folder$")
    with pytest.raises(UserError, match=message):
        prepare_weights(plan, str(victim))
    with pytest.raises(UserError, match=message):
        convert_bin(bin_dir, victim)
    assert {f.name: f.read_bytes() for f in victim.iterdir()} == before and plan.safetensors_dir == ""

    other = tmp_path / "other"  # any other content too (a model directory: .bin files, config)
    shutil.copytree(bin_dir, other)
    with pytest.raises(UserError, match=rf"^model.safetensors_dir: {re.escape(str(other))} already holds files"):
        prepare_weights(plan, str(other))
    assert not list(other.glob("*.safetensors")) and not list(other.glob(".kopretrain*"))

    empty = tmp_path / "empty"  # an existing empty folder is fine
    empty.mkdir()
    assert prepare_weights(plan, str(empty))["reused"] is False and (empty / MARKER).is_file()


def test_train_refuses_another_models_folder_before_ray(bin_dir, tmp_path):
    from kopretrain.train.command import run_train

    victim = tmp_path / "victim"
    before = _sharded_safetensors_model(victim)
    cfg = smoke_cfg(*expanded_overrides(bin_dir), f"model.safetensors_dir={victim}")
    with pytest.raises(UserError, match=rf"^model.safetensors_dir: {re.escape(str(victim))} already holds files"):
        run_train(cfg, tmp_path / "run")
    assert {f.name: f.read_bytes() for f in victim.iterdir()} == before
    assert not (tmp_path / "run" / "logs").exists()  # init_ray never ran


def test_train_refuses_a_missing_bin_shard_on_the_driver_before_ray(bin_dir, tmp_path):
    from kopretrain.train.command import run_train

    broken = tmp_path / "broken"
    shutil.copytree(bin_dir, broken)
    victim = sorted(broken.glob("pytorch_model-*.bin"))[-1]
    victim.unlink()
    with pytest.raises(UserError, match=rf"^model.name_or_path: {re.escape(str(victim))} is named in pytorch_model.bin.index.json"):
        run_train(smoke_cfg(*expanded_overrides(broken)), tmp_path / "run")
    assert not (tmp_path / "run" / "logs").exists()  # init_ray (which makes the log dir) never ran


def test_a_hub_id_with_only_bin_files_is_converted_in_its_hf_cache_snapshot(bin_dir, tmp_path):
    """HF_HUB_OFFLINE=1 with the repository in the local HF cache (no network here): the same conversion,
    into `safetensors/` of the snapshot; run in a fresh process, as the hub library reads the variables at import."""
    import dataclasses
    import os
    import pickle
    import subprocess
    import sys

    snapshot = tmp_path / "hub" / "models--kopretrain-test--tiny-bin" / "snapshots" / "abc123"
    shutil.copytree(bin_dir, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    plan, _ = _plan(bin_dir)
    (tmp_path / "plan.pkl").write_bytes(pickle.dumps(dataclasses.replace(plan, name_or_path="kopretrain-test/tiny-bin")))
    code = ("import json, pickle, sys; from kopretrain.train.convert_bin import prepare_weights; "
            "plan = pickle.load(open(sys.argv[1], 'rb')); info = prepare_weights(plan, ''); "
            "print(json.dumps([info, plan.safetensors_dir]))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "plan.pkl")], env=env, capture_output=True,
                         text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    info, where = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["reused"] is False and where == info["where"] == str(snapshot / "safetensors")
    assert (snapshot / "safetensors" / MARKER).is_file()


def test_runs_that_start_together_convert_once(bin_dir, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:  # flock: each call opens the lock file itself, so the calls exclude each other
        infos = list(pool.map(lambda _: convert_bin(bin_dir, tmp_path / "st"), range(3)))
    assert sorted(i["reused"] for i in infos) == [False, True, True]
    assert len(list((tmp_path / "st").glob("model-*.safetensors"))) == len(list(bin_dir.glob("pytorch_model-*.bin")))
