"""`kopretrain eval`: bits per character per domain, and the change against a base model.

    kopretrain eval model_dir=<dir> [base_model_dir=<dir>] [heldout.ko=file heldout.en=file]

report.json: {"model": ..., "domains": {"ko": {"bpc": .., "tokens_per_char": .., ...}, ...},
              "base": {...same...}, "delta_bpc": {"ko": model - base, ...}}
A positive English delta is forgetting; a negative Korean delta is what we trained for.
"""

from __future__ import annotations

from pathlib import Path

from kopretrain.config.eval import EvalConfig
from kopretrain.errors import UserError


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def load_model_and_tokenizer(model_dir: str, tokenizer_dir: str = ""):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kopretrain.paths import resolve_path

    model_path = resolve_path(model_dir)
    if not (model_path / "config.json").exists():
        raise UserError(f"not a Hugging Face model directory (no config.json): {model_dir}")
    tokenizer_path = resolve_path(tokenizer_dir) if tokenizer_dir else model_path
    if not tokenizer_path.is_dir():
        raise UserError(f"tokenizer directory not found: {tokenizer_dir}")
    model = AutoModelForCausalLM.from_pretrained(model_path)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    return model, tokenizer


def evaluate_model(model_dir: str, tokenizer_dir: str, texts: dict[str, list[str]], cfg: EvalConfig) -> dict:
    """bpc per domain for one model; pure function of its inputs (no tracking)."""
    from kopretrain.eval.bpc import bits_per_char

    model, tokenizer = load_model_and_tokenizer(model_dir, tokenizer_dir)
    device = _device(cfg.device)
    model.to(device)
    max_len = cfg.max_len or int(getattr(model.config, "max_position_embeddings", 512))
    out = {}
    for domain, docs in texts.items():
        r = bits_per_char(model, tokenizer, docs, max_len=max_len, batch_size=cfg.batch_size, device=device)
        out[domain] = {
            "bpc": r.bpc,
            "tokens_per_char": r.tokens_per_char,
            "num_docs": r.num_docs,
            "num_chars": r.num_chars,
            "num_tokens": r.num_tokens,
        }
    return out


def run_eval(cfg: EvalConfig, run_dir: Path) -> dict:
    from kopretrain.eval.heldout import read_heldout
    from kopretrain.tracking import start_run

    texts = {d: read_heldout(p, cfg.max_docs_per_domain) for d, p in cfg.heldout.items()}
    tracker = start_run(cfg.tracking, run_name=f"eval-{run_dir.name}", config=cfg)
    report: dict = {"model_dir": cfg.model_dir, "heldout": dict(cfg.heldout)}
    report["domains"] = evaluate_model(cfg.model_dir, cfg.tokenizer_dir, texts, cfg)
    tracker.log_metrics({f"{d}_bpc": v["bpc"] for d, v in report["domains"].items()})
    if cfg.base_model_dir:
        report["base_model_dir"] = cfg.base_model_dir
        report["base"] = evaluate_model(cfg.base_model_dir, cfg.base_tokenizer_dir, texts, cfg)
        report["delta_bpc"] = {d: report["domains"][d]["bpc"] - report["base"][d]["bpc"] for d in texts}
        tracker.log_metrics({f"{d}_bpc_delta": v for d, v in report["delta_bpc"].items()})
    _print_table(report)
    report["mlflow_run_id"] = tracker.run_id
    tracker.log_dict(report, "report.json")
    tracker.end()
    return report


def _print_table(report: dict) -> None:
    base = report.get("base")
    print(f"{'domain':<8} {'bpc':>8} {'tok/char':>9}" + (f" {'base bpc':>9} {'change':>8}" if base else ""))
    for d, v in report["domains"].items():
        line = f"{d:<8} {v['bpc']:>8.4f} {v['tokens_per_char']:>9.3f}"
        if base:
            line += f" {base[d]['bpc']:>9.4f} {report['delta_bpc'][d]:>+8.4f}"
        print(line)
