"""`kopretrain demo` (`make demo`): the whole Korean continual-pretraining loop, end to end,
on the shipped sample, a local Ray instance and a tiny model. No internet, no pretrained weights.

What a user does to Llama-2 with kopretrain, the demo does to a base it builds itself:

1. prepare     clean + dedup the shipped Korean and English samples with Ray Data;
2. tokenizer   train a small English SentencePiece BPE (the "English base" tokenizer) and
               expand it with the Hangul pieces of a Korean SentencePiece BPE;
3. tokens      pack the clean text with the base and with the expanded tokenizer;
4. base        pretrain a tiny Llama on English only (the "English base" model);
5. sweep       `kopretrain train -m mix.replay_ratio=0,0.2` (a real Hydra multirun in a child
               process, joined to this Ray instance): resize + mean-initialise the new embeddings,
               continue pretraining on Korean with 0% and 20% English replay, FSDP on 2 workers;
6. eval        bits per character on held-out Korean and English for the base and each run,
               printed as a table (bpc, not loss, because the vocabularies differ), filed on each
               training run (its report.json `eval`, its MLflow metrics `ko_bpc`, `en_bpc`, ...);
7. report      `kopretrain report <sweep dir>`: report.md and tradeoff.png, on the sweep's parent run.

Everything is filed in MLflow under one parent run; each step is a child run, and the sweep's
parent run (with one child per replay ratio, named `replay_ratio=0.2`) is one of them.

Before any work, every config the demo derives for its steps (prepare, tokenizer, the base's
train config, each sweep job's composed `kopretrain train` config, eval) is built and
validated through the same schema classes; an error names the demo key it came from
(kopretrain/demo_configs.py). The console gets the stage lines; Ray's logs go to `<run dir>/logs/` and to
each step's directory (kopretrain/ray_session.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from kopretrain.config.demo import DemoConfig
from kopretrain.console import say
from kopretrain.demo_configs import (base_train_config, check_derived, eval_config, prepare_config, sweep_overrides,
                                     tokenizer_config)
from kopretrain.errors import UserError
from kopretrain.paths import PROJECT_ROOT, resolve_path


def _say(message: str) -> None:
    say("demo", message)


def _child_tracking(cfg: DemoConfig, parent_run_id: str, name: str):
    return dataclasses.replace(cfg.tracking, parent_run_id=parent_run_id, run_name=f"demo-{name}")


def _prepare(cfg: DemoConfig, work: Path, tokenizer: str, tokens_dir: Path | None, tracking) -> dict:
    from kopretrain.data.command import run_prepare

    run_dir = work / ("prepare" if not tokenizer else f"pack-{Path(tokens_dir).name}")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_prepare(prepare_config(cfg, work, tokenizer, tokens_dir, tracking), run_dir)


def _tokenizers(cfg: DemoConfig, work: Path, tracking) -> dict:
    from kopretrain.tokenizer.command import run_tokenizer

    return run_tokenizer(tokenizer_config(cfg, work, tracking), work / "tokenizer")


def _train_base(cfg: DemoConfig, work: Path, tokenizer: str, tokens_dir: Path, tracking) -> dict:
    from kopretrain.train.command import run_train

    run_dir = work / "base"
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_train(base_train_config(cfg, tokenizer, tokens_dir, tracking), run_dir)


def _sweep(cfg: DemoConfig, work: Path, base_model: str, tokenizer: str, tokens_dir: Path, parent_run_id: str) -> dict:
    """The continual-pretraining sweep as a user runs it: a Hydra multirun of `kopretrain train`."""
    import ray

    sweep_dir = work / "cpt"
    overrides = [
        "-m", f"mix.replay_ratio={','.join(str(r) for r in cfg.replay_ratios)}",
        *sweep_overrides(cfg, base_model, tokenizer, tokens_dir, parent_run_id, ray.get_runtime_context().gcs_address),
        f"hydra.sweep.dir={sweep_dir}",
    ]
    cmd = [sys.executable, "-m", "kopretrain", "train", *overrides]
    _say("$ kopretrain train " + " ".join(overrides))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"the continual-pretraining sweep failed (exit {proc.returncode}); see the output above")
    return json.loads((sweep_dir / "report.json").read_text(encoding="utf-8"))


def _evaluate(cfg: DemoConfig, models: dict[str, str]) -> dict[str, dict]:
    """bpc per domain for each {name: model dir} (each dir holds its own tokenizer)."""
    from kopretrain.eval.command import evaluate_model
    from kopretrain.eval.heldout import read_heldout

    texts = {d: read_heldout(p, cfg.max_heldout_docs) for d, p in cfg.heldout.items()}
    ecfg = eval_config(cfg)
    return {name: evaluate_model(path, "", texts, ecfg) for name, path in models.items()}


def format_table(report: dict) -> str:
    base = report["base"]
    lines = [
        f"{'replay_ratio':>12}  {'ko_bpc':>7}  {'en_bpc':>7}  {'ko vs base':>10}  {'en vs base':>10}",
        f"{'base':>12}  {base['ko_bpc']:>7.3f}  {base['en_bpc']:>7.3f}  {'':>10}  {'':>10}",
    ]
    for row in report["rows"]:
        lines.append(f"{row['replay_ratio']:>12.2f}  {row['ko_bpc']:>7.3f}  {row['en_bpc']:>7.3f}  "
                     f"{row['ko_bpc_change']:>+10.3f}  {row['en_bpc_change']:>+10.3f}")
    return "\n".join(lines)


def run_demo(cfg: DemoConfig, run_dir: Path) -> dict:
    from kopretrain.ray_session import init_ray, route_logs
    from kopretrain.tracking import start_run

    for domain, path in cfg.heldout.items():
        if not resolve_path(path).is_file():
            raise UserError(f"heldout.{domain}: file not found: {path}")
    work = (resolve_path(cfg.work_dir) if cfg.work_dir else run_dir).resolve()
    check_derived(cfg, work)
    work.mkdir(parents=True, exist_ok=True)
    route_logs(run_dir / "logs", cfg.ray.verbose)
    parent = start_run(cfg.tracking, run_name=f"demo-{run_dir.name}", config=cfg)
    timings: dict[str, float] = {}
    report: dict = {"work_dir": str(work), "mlflow_run_id": parent.run_id}

    def step(name: str, fn, *args):
        _say(f"--- {name}")
        t0 = time.perf_counter()
        out = fn(*args)
        timings[name] = round(time.perf_counter() - t0, 1)
        _say(f"{name}: {timings[name]} s")
        return out

    try:
        init_ray(cfg.ray, log_dir=run_dir / "logs")
        child = lambda name: _child_tracking(cfg, parent.run_id, name)  # noqa: E731
        prep = step("prepare", _prepare, cfg, work, "", None, child("prepare"))
        tok = step("tokenizer", _tokenizers, cfg, work, child("tokenizer"))
        base_tok, expanded_tok = tok["trained_base"], tok["output_dir"]
        tokens_base, tokens_expanded = work / "tokens" / "base", work / "tokens" / "expanded"
        step("pack_base", _prepare, cfg, work, base_tok, tokens_base, child("pack-base"))
        step("pack_expanded", _prepare, cfg, work, expanded_tok, tokens_expanded, child("pack-expanded"))
        base = step("base_model", _train_base, cfg, work, base_tok, tokens_base, child("base"))
        sweep = step("replay_sweep", _sweep, cfg, work, base["model_path"], expanded_tok, tokens_expanded, parent.run_id)
        models = {"base": base["model_path"]}
        models.update({str(i): job["report"]["model_path"] for i, job in enumerate(sweep["jobs"])})
        bpc = step("eval", _evaluate, cfg, models)
    except BaseException:
        parent.end("FAILED")
        raise

    report["base"] = {"ko_bpc": bpc["base"]["ko"]["bpc"], "en_bpc": bpc["base"]["en"]["bpc"],
                      "model_path": base["model_path"], "vocab_size": tok["base_vocab_size"],
                      "final_loss": base["losses"][-1]["loss"]}
    report["rows"] = []
    for i, job in enumerate(sweep["jobs"]):
        r = bpc[str(i)]
        report["rows"].append({
            "replay_ratio": job["report"]["weights"].get("en", 0.0),
            "ko_bpc": r["ko"]["bpc"], "en_bpc": r["en"]["bpc"],
            "ko_bpc_change": r["ko"]["bpc"] - report["base"]["ko_bpc"],
            "en_bpc_change": r["en"]["bpc"] - report["base"]["en_bpc"],
            "token_share": job["report"]["token_share"], "model_path": job["report"]["model_path"],
            "run_dir": job["run_dir"], "mlflow_run_id": job["report"].get("mlflow_run_id", ""),
        })
    report["rows"].sort(key=lambda row: row["replay_ratio"])
    report["tokenizer"] = {"base_vocab_size": tok["base_vocab_size"], "vocab_size": tok["vocab_size"],
                           "num_added": tok["num_added"], "tokens_ratio_base_to_expanded": tok["tokens_ratio_base_to_expanded"]}
    report["prepare"] = {k: prep[k] for k in ("docs_in", "docs_out") if k in prep}
    report["timings_s"] = timings
    report["total_s"] = round(sum(timings.values()), 1)

    print()
    print(format_table(report))
    print(f"(bits per character on held-out text; lower is better; {report['total_s']} s in all)")
    parent.log_metrics({"base_ko_bpc": report["base"]["ko_bpc"], "base_en_bpc": report["base"]["en_bpc"]})
    _file_eval_on_runs(sweep, bpc, getattr(parent, "uri", ""))  # each training run carries its own eval results
    parent.log_metrics({f"time_{k}_s": v for k, v in timings.items()})
    report["report"] = _report(cfg, work / "cpt", run_dir)
    parent.log_dict(report, "report.json")
    parent.end()
    return report


def _file_eval_on_runs(sweep: dict, bpc: dict[str, dict], uri: str) -> None:
    """Each sweep job's held-out bpc (and its change against the base) into its report.json (`eval`,
    in `kopretrain eval`'s layout) and onto its MLflow run as metrics (`ko_bpc`, `ko_bpc_delta`, ...,
    the names `kopretrain eval` logs), so that MLflow's chart and compare views plot them per run."""
    from kopretrain.run_dir import read_report, write_report
    from kopretrain.tracking import MlflowTracker

    base = bpc["base"]
    for i, job in enumerate(sweep["jobs"]):
        scores = bpc[str(i)]
        job_report = read_report(job["run_dir"])
        job_report["eval"] = {"domains": scores, "base": base,
                              "delta_bpc": {d: scores[d]["bpc"] - base[d]["bpc"] for d in scores}}
        write_report(Path(job["run_dir"]) / "report.json", job_report)
        run_id = job["report"].get("mlflow_run_id", "")
        if uri and run_id:
            metrics = {}
            for d, v in scores.items():
                metrics.update({f"{d}_bpc": v["bpc"], f"{d}_bpc_delta": v["bpc"] - base[d]["bpc"],
                                f"{d}_bpc_retained": base[d]["bpc"] / v["bpc"]})
            MlflowTracker(uri, "", "", run_id=run_id).log_metrics(metrics)


def _report(cfg: DemoConfig, sweep_dir: Path, run_dir: Path) -> dict:
    """`kopretrain report <sweep dir>`: report.md and tradeoff.png in the sweep dir, on the sweep's parent run."""
    from kopretrain.config.report import ReportConfig
    from kopretrain.report.command import run_report

    _say(f"$ kopretrain report {sweep_dir}")
    out = run_report(ReportConfig(sweep=str(sweep_dir), tracking=cfg.tracking), run_dir)
    return {k: out[k] for k in ("report_md", "tradeoff_png", "mlflow_parent_run_id")}
