"""`kopretrain eval` end to end on a tiny model: skipped held-out records are reported and the
eval completes; encodings and NFD do not change the figures; mistakes are one line before any
weight is read; the MLflow run (a real local sqlite store) ends FINISHED or FAILED."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from kopretrain.config.common import TrackingConfig
from kopretrain.config.eval import EvalConfig, KobestConfig
from kopretrain.errors import ConfigError, UserError
from kopretrain.eval.command import resolve_device, run_eval
from tests.helpers import make_tiny_llama_dir

KO = ["안녕하세요, 오늘은 날씨가 좋네요.", "한국어 문장을 평가합니다.", "자모가 분리되어도 같은 글입니다."]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, repo_root) -> Path:
    texts = (repo_root / "data/heldout/ko.txt").read_text(encoding="utf-8").splitlines()[:100]
    return make_tiny_llama_dir(tmp_path_factory.mktemp("model"), texts + KO, max_position_embeddings=64)


def _cfg(model, tmp_path, heldout: dict, kobest: KobestConfig | None = None, **kw) -> EvalConfig:
    return EvalConfig(model_dir=str(model), heldout={k: str(v) for k, v in heldout.items()},
                      tracking=TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db"),
                      kobest=kobest or KobestConfig(enabled=False), **kw)


def _runs(tmp_path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    return client.search_runs([client.get_experiment_by_name("kopretrain").experiment_id])


def _bpc(model, tmp_path, path, **kw) -> float:
    cfg = _cfg(model, tmp_path, {"ko": path}, **kw)
    cfg.tracking.enabled = False
    return run_eval(cfg, tmp_path / "run")["domains"]["ko"]["bpc"]


def test_bad_heldout_records_are_skipped_reported_and_the_eval_completes(tmp_path, tiny_model, capsys):
    path = tmp_path / "ko.jsonl"
    path.write_bytes(b"".join(json.dumps({"text": t}).encode() + b"\n" for t in KO[:2])
                     + b'{"text": 123}\n{"text": "\xff\xfe"}\n{"text": \n{"text": null}\n')
    report = run_eval(_cfg(tiny_model, tmp_path, {"ko": path}), tmp_path / "run")
    ko = report["domains"]["ko"]
    assert (ko["num_docs"], ko["num_rejected"]) == (2, 4)
    assert ko["rejected"] == {"invalid_utf8": 1, "malformed_json": 1, "non_string_text": 1, "null_text": 1}
    assert ko["num_chars"] == len(KO[0]) + len(KO[1]) and 0 < ko["bpc"] < 20
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("eval:")]
    assert err == [f"eval: heldout.ko: skipped 4 of 6 records in {path} "
                   "(invalid_utf8 1, malformed_json 1, non_string_text 1, null_text 1)"]
    [run] = _runs(tmp_path)
    assert run.info.status == "FINISHED" and run.info.run_id == report["mlflow_run_id"]
    assert run.data.metrics["ko_bpc"] == pytest.approx(ko["bpc"])
    clean = tmp_path / "clean.txt"
    clean.write_text("\n".join(KO[:2]) + "\n", encoding="utf-8")
    assert _bpc(tiny_model, tmp_path, clean) == ko["bpc"]  # the same as a file without the bad records


def test_cp949_heldout_with_its_encoding_scores_like_utf8(tmp_path, tiny_model):
    utf8, cp949 = tmp_path / "u.txt", tmp_path / "c.txt"
    utf8.write_text("\n".join(KO) + "\n", encoding="utf-8")
    cp949.write_bytes(("\n".join(KO) + "\n").encode("cp949"))
    assert _bpc(tiny_model, tmp_path, cp949, heldout_encoding="cp949") == _bpc(tiny_model, tmp_path, utf8)
    with pytest.raises(UserError, match=r"heldout\.ko: no readable documents .*\(3 records skipped: invalid_utf8 3\)"):
        _bpc(tiny_model, tmp_path, cp949)


def test_nfd_file_gives_the_bpc_of_its_nfc_form(tmp_path, tiny_model):
    nfc, nfd = tmp_path / "nfc.txt", tmp_path / "nfd.txt"
    nfc.write_text("\n".join(KO) + "\n", encoding="utf-8")
    nfd.write_text(unicodedata.normalize("NFD", "\n".join(KO)) + "\n", encoding="utf-8")
    assert nfc.read_bytes() != nfd.read_bytes()
    assert _bpc(tiny_model, tmp_path, nfd) == _bpc(tiny_model, tmp_path, nfc)


def _without_weights(tiny_model, tmp_path) -> Path:
    d = tmp_path / "no_weights"
    d.mkdir()
    for f in tiny_model.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, d)
    return d


def test_model_dir_without_weights_fails_the_run(tmp_path, tiny_model):
    d = _without_weights(tiny_model, tmp_path)
    with pytest.raises(UserError, match=rf"^model_dir: no model weights \(model.safetensors, .*\) in {d}$"):
        run_eval(_cfg(d, tmp_path, {"ko": "data/heldout/ko.txt"}), tmp_path / "run")
    [run] = _runs(tmp_path)
    assert run.info.status == "FAILED"


def test_checks_before_weights_are_read(tmp_path, tiny_model):
    """Broken weights are never read when an earlier check fails."""
    d = _without_weights(tiny_model, tmp_path)
    (d / "model.safetensors").write_bytes(b"not safetensors")
    heldout = {"ko": "data/heldout/ko.txt"}
    with pytest.raises(UserError, match=r"^max_len=65 exceeds the context of model_dir \(max_position_embeddings=64 in "):
        run_eval(_cfg(d, tmp_path, heldout, max_len=65), tmp_path / "run")
    with pytest.raises(UserError, match=r"^heldout\.en: file not found: .*nope\.txt$"):
        run_eval(_cfg(d, tmp_path, {**heldout, "en": tmp_path / "nope.txt"}), tmp_path / "run")
    with pytest.raises(UserError, match=r"^base_model_dir: not a Hugging Face model directory"):
        run_eval(_cfg(d, tmp_path, heldout, base_model_dir=str(tmp_path)), tmp_path / "run")
    assert [r.info.status for r in _runs(tmp_path)] == ["FAILED"] * 3


def test_device_values():
    assert resolve_device("cpu") == "cpu"
    for bad in ("gpu", "cuda:x", "CPU"):
        with pytest.raises(ConfigError, match="device"):
            EvalConfig(model_dir="m", device=bad)
    assert EvalConfig(model_dir="m", device="cuda:1").device == "cuda:1"
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(UserError, match=r"^device=cuda:1: CUDA is not available on this machine"):
            resolve_device("cuda:1")
    else:
        with pytest.raises(UserError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def _cli(tmp_path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "kopretrain", "eval", *args, f"hydra.run.dir={tmp_path}/run"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def _one_error_line(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("kopretrain eval: error: ")
    return lines[0]


@pytest.mark.parametrize("max_len", [1, 2])
def test_cli_short_max_len_is_one_line(tmp_path, tiny_model, max_len):
    line = _one_error_line(_cli(tmp_path, f"model_dir={tiny_model}", f"max_len={max_len}"))
    assert line.endswith(f"max_len: {max_len} is too short to score a window (0 = the model's context, else >= 3)")


def test_cli_cuda_without_gpu_is_one_line(tmp_path, tiny_model):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    line = _one_error_line(_cli(tmp_path, f"model_dir={tiny_model}", "device=cuda", "tracking.enabled=false"))
    assert "device=cuda: CUDA is not available on this machine" in line


def test_cli_model_without_weights_is_one_line_and_a_failed_run(tmp_path, tiny_model):
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_experiments()  # create the store: its setup logs
    d = _without_weights(tiny_model, tmp_path)
    line = _one_error_line(_cli(tmp_path, f"model_dir={d}", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"))
    assert line == f"kopretrain eval: error: model_dir: no model weights (model.safetensors, " \
                   f"model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json) in {d}"
    [run] = _runs(tmp_path)
    assert run.info.status == "FAILED"


def test_a_tokenizer_larger_than_the_embedding_is_one_line_before_weights(tmp_path, tiny_model, shared_dir=Path("/work/shared")):
    """Before, polyglot-ko's 30k vocabulary on a small model was a 63-line IndexError traceback."""
    polyglot = shared_dir / "tokenizers/polyglot-ko"
    if not polyglot.is_dir():
        pytest.skip("no /work/shared/tokenizers/polyglot-ko")
    from kopretrain.tokenizer.load import load_tokenizer

    tok = load_tokenizer(polyglot)
    ids = max(tok.vocab_size, max(tok.special_ids, default=-1) + 1, tok.eos_id + 1)
    rows = json.loads((tiny_model / "config.json").read_text())["vocab_size"]
    assert ids > rows
    d = _without_weights(tiny_model, tmp_path)
    (d / "model.safetensors").write_bytes(b"not safetensors")  # never read
    cfg = _cfg(d, tmp_path, {"ko": "data/heldout/ko.txt"}, tokenizer_dir=str(polyglot))
    cfg.tracking.enabled = False
    with pytest.raises(UserError, match=rf"^tokenizer_dir: its vocabulary \({ids}\) is larger than the model's "
                                        rf"embedding \({rows} rows\)$"):
        run_eval(cfg, tmp_path / "run")
