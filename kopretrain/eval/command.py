"""`kopretrain eval`: bpc, loss per token and perplexity per domain, KoBEST, and the change against a base.

    kopretrain eval model_dir=<dir> [base_model_dir=<dir>] [heldout.ko=file heldout.en=file]
                    [kobest.num_fewshot=5 kobest.split=test kobest.enabled=false]

report.json: {"model_dir": ..., "domains": {"ko": {"bpc", "loss_per_token", "perplexity", "tokens_per_char",
              "num_docs", "num_chars", "num_tokens", "num_rejected", "rejected": {reason: n}}, ...},
              "kobest": {"BoolQ": {"acc", "macro_f1", "num_items"}, ..., "mean": {"acc", "macro_f1"}},
              "kobest_settings": {"split", "num_fewshot", "seed", "limit"},
              with a base: "base": {domain: ...same...}, "base_kobest": {...same...},
              "delta": {"domains": {d: {"bpc", "loss_per_token", "perplexity"}}, "kobest": {task: {"acc", "macro_f1"}}},
              "delta_bpc": {d: model - base}, "retention": see `retention`}
A positive English delta is forgetting; a negative Korean delta is what we trained for.

Everything that can be checked without the weights is checked first, as one-line UserErrors:
the device against the machine, each model directory (config.json and weights present),
`max_len` against each model's context, the tokenizers (their vocabulary must fit the model's
embedding rows), then the held-out files (read with
prepare's reader: skipped records are told in one line and reported) and the KoBEST files. The MLflow run ends
FINISHED on success and FAILED on any error.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from kopretrain.config.eval import MIN_MAX_LEN, EvalConfig
from kopretrain.errors import UserError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
DEFAULT_CONTEXT = 512  # window length for a model whose config names no context length


def resolve_device(name: str) -> str:
    """The torch device for `name` (auto/cpu/cuda/cuda:N); UserError if it is not on this machine."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device={name}: CUDA is not available on this machine (torch {torch.__version__}); "
                            "use device=cpu or device=auto")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise UserError(f"device={name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return name


@dataclass
class ModelSpec:
    """A model directory checked without loading its weights."""

    path: Path
    tokenizer: object
    """The `TextTokenizer` to encode with."""
    max_len: int
    """Window length in tokens."""


def check_model(key: str, model_dir: str, tokenizer_dir: str, max_len: int) -> ModelSpec:
    """Config, weights, context and tokenizer of a model directory, before any weight is read."""
    from transformers import AutoConfig

    from kopretrain.paths import resolve_path
    from kopretrain.tokenizer.load import load_tokenizer

    path = resolve_path(model_dir)
    if not (path / "config.json").is_file():
        raise UserError(f"{key}: not a Hugging Face model directory (no config.json): {model_dir}")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise UserError(f"{key}: no model weights ({', '.join(WEIGHT_FILES)}) in {path}")
    try:
        config = AutoConfig.from_pretrained(path)
    except (ValueError, OSError) as e:
        raise UserError(f"{key}: cannot read {path / 'config.json'}: {str(e).splitlines()[0]}") from None
    context = getattr(config, "max_position_embeddings", None)
    if context and max_len > context:
        raise UserError(f"max_len={max_len} exceeds the context of {key} "
                        f"(max_position_embeddings={context} in {path / 'config.json'})")
    max_len = max_len or context or DEFAULT_CONTEXT
    if max_len < MIN_MAX_LEN:
        raise UserError(f"{key}: a context of {max_len} tokens is too short to score a window (needs >= {MIN_MAX_LEN})")
    tok_key = "base_tokenizer_dir" if key.startswith("base") else "tokenizer_dir"
    try:
        tokenizer = load_tokenizer(resolve_path(tokenizer_dir) if tokenizer_dir else path)
    except UserError as e:
        raise UserError(f"{tok_key if tokenizer_dir else key}: {e}") from None
    rows = getattr(config, "vocab_size", None)
    ids = max(tokenizer.vocab_size, max(tokenizer.special_ids, default=-1) + 1, tokenizer.eos_id + 1)
    if rows and ids > rows:  # an id past the embedding is an IndexError deep in the forward pass
        raise UserError(f"{tok_key if tokenizer_dir else key}: its vocabulary ({ids}) is larger than the model's "
                        f"embedding ({rows} rows)")
    return ModelSpec(path, tokenizer, max_len)


def load_model(spec: ModelSpec, device: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(spec.path).to(device)


def score_model(spec: ModelSpec, texts: dict[str, list[str]], cfg: EvalConfig, device: str, model=None) -> dict:
    """bpc, loss per token and perplexity per domain for one checked model; pure function of its inputs."""
    from kopretrain.eval.bpc import bits_per_char

    model = model if model is not None else load_model(spec, device)
    return {domain: bits_per_char(model, spec.tokenizer, docs, max_len=spec.max_len, batch_size=cfg.batch_size,
                                  device=device).as_dict()
            for domain, docs in texts.items()}


def score_all(spec: ModelSpec, texts: dict[str, list[str]], cfg: EvalConfig, device: str) -> tuple[dict, dict]:
    """(domains, kobest) of one model, loaded once; kobest is {} when `kobest.enabled` is false."""
    from kopretrain.eval.kobest import score_kobest

    model = load_model(spec, device)
    domains = score_model(spec, texts, cfg, device, model)
    kobest = score_kobest(model, spec.tokenizer, cfg.kobest, max_len=spec.max_len, device=device) if cfg.kobest.enabled else {}
    return domains, kobest


def check_kobest(cfg: EvalConfig) -> None:
    """Read every KoBEST file the run needs (one-line UserError naming a bad one), before any weight."""
    from kopretrain.eval.kobest_data import read_task

    if not cfg.kobest.enabled:
        return
    for task in cfg.kobest.tasks:
        read_task(cfg.kobest.data_dir, task, cfg.kobest.split)
        if cfg.kobest.num_fewshot and cfg.kobest.split != "dev":
            read_task(cfg.kobest.data_dir, task, "dev")


def evaluate_model(model_dir: str, tokenizer_dir: str, texts: dict[str, list[str]], cfg: EvalConfig) -> dict:
    """bpc per domain for one model directory (checks it first); used by the demo."""
    spec = check_model("model_dir", model_dir, tokenizer_dir, cfg.max_len)
    return score_model(spec, texts, cfg, resolve_device(cfg.device))


def run_eval(cfg: EvalConfig, run_dir: Path) -> dict:
    from kopretrain.ray_session import route_logs
    from kopretrain.tracking import start_run

    # MLflow's INFO ("Creating initial MLflow database tables") to <run dir>/logs/ray.log, no
    # "Loading weights" bars: the console shows the result table, warnings and errors.
    route_logs(Path(run_dir) / "logs", verbose=False, with_ray=False)
    tracker = start_run(cfg.tracking, run_name=f"eval-{run_dir.name}", config=cfg)
    try:
        report = _run(cfg, tracker)
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end()
    return report


def _run(cfg: EvalConfig, tracker) -> dict:
    from kopretrain.eval.heldout import read_heldout_documents, skipped_line

    device = resolve_device(cfg.device)
    spec = check_model("model_dir", cfg.model_dir, cfg.tokenizer_dir, cfg.max_len)
    base = check_model("base_model_dir", cfg.base_model_dir, cfg.base_tokenizer_dir, cfg.max_len) if cfg.base_model_dir else None
    heldout = {d: read_heldout_documents(d, p, cfg.max_docs_per_domain, format=cfg.heldout_format,
                                         text_field=cfg.heldout_text_field, encoding=cfg.heldout_encoding,
                                         text_field_key="heldout_text_field")
               for d, p in cfg.heldout.items()}
    for d, docs in heldout.items():
        line = skipped_line(d, cfg.heldout[d], docs)
        if line:
            print(f"eval: {line}", file=sys.stderr, flush=True)
    texts = {d: docs.texts for d, docs in heldout.items()}
    check_kobest(cfg)

    from kopretrain.eval.forgetting import compare, metrics

    report: dict = {"model_dir": cfg.model_dir, "heldout": dict(cfg.heldout)}
    report["domains"], report["kobest"] = score_all(spec, texts, cfg, device)
    if cfg.kobest.enabled:
        report["kobest_settings"] = {k: getattr(cfg.kobest, k) for k in ("split", "num_fewshot", "seed", "limit")}
    for d, docs in heldout.items():
        report["domains"][d].update(num_rejected=docs.num_rejected, rejected=docs.rejected)
    if base is not None:
        report["base_model_dir"] = cfg.base_model_dir
        report["base"], report["base_kobest"] = score_all(base, texts, cfg, device)
        report.update(compare(report))
    tracker.log_metrics(metrics(report))
    _print_table(report)
    report["mlflow_run_id"] = tracker.run_id
    tracker.log_dict(report, "report.json")
    return report


def _print_table(report: dict) -> None:
    from kopretrain.eval.forgetting import retention_line

    base, base_kobest = report.get("base"), report.get("base_kobest") or {}
    print(f"{'domain':<8} {'bpc':>8} {'loss/tok':>9} {'ppl':>9} {'tok/char':>9}"
          + (f" {'base bpc':>9} {'change':>8}" if base else ""))
    for d, v in report["domains"].items():
        line = f"{d:<8} {v['bpc']:>8.4f} {v['loss_per_token']:>9.4f} {v['perplexity']:>9.2f} {v['tokens_per_char']:>9.3f}"
        if base:
            line += f" {base[d]['bpc']:>9.4f} {report['delta_bpc'][d]:>+8.4f}"
        print(line)
    if report.get("kobest"):
        settings = report["kobest_settings"]
        print(f"KoBEST ({settings['split']}, {settings['num_fewshot']}-shot)")
        print(f"{'task':<10} {'acc':>7} {'macro_f1':>9} {'items':>6}" + (f" {'base acc':>9} {'change':>8}" if base_kobest else ""))
        for task, v in report["kobest"].items():
            items = f"{v['num_items']:>6}" if "num_items" in v else " " * 6
            line = f"{task:<10} {v['acc']:>7.4f} {v['macro_f1']:>9.4f} {items}"
            if base_kobest:
                line += f" {base_kobest[task]['acc']:>9.4f} {v['acc'] - base_kobest[task]['acc']:>+8.4f}"
            print(line)
    if base:
        print(retention_line(report["retention"]))
