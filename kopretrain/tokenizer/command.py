"""`kopretrain tokenizer`: expand a base tokenizer with Korean tokens and measure it.

    kopretrain tokenizer base=../shared/tokenizers/llama2/tokenizer.model            # corpus: data/ko
    kopretrain tokenizer base=<dir> corpus=outputs/prepare/<run> num_new_tokens=8960
    kopretrain tokenizer base=<...> extra_model=korean.model                         # merge all its new pieces
    kopretrain tokenizer base=<...> extra_model=korean.model num_new_tokens=8000     # its 8000 most frequent
    kopretrain tokenizer train_base.corpus=data/en model_dir=<HF model dir>              # demo-style
    kopretrain tokenizer experiment=smoke

Writes `<output_dir>` (default `<run dir>/tokenizer`: tokenizer.json, tokenizer_config.json,
tokenizer.model for SentencePiece bases, kopretrain_tokenizer.json), `<run dir>/base` when an
English base was trained, `<run dir>/model` when `model_dir=` was given, and returns the report
(written to report.json by the CLI): vocabulary sizes, tokens added, tokens per character and
per word on held-out text for base / expanded / reference, whether held-out text without
Hangul still gets exactly the base's ids, and for SentencePiece bases `merge`: pieces added,
user-defined symbols added, pieces already in the base, pieces added in the base's normalized
form and pieces left out as unreachable, with reasons.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from kopretrain.config.tokenizer import TokenizerCommandConfig
from kopretrain.errors import UserError
from kopretrain.paths import resolve_path

OUTPUT_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                "kopretrain_tokenizer.json")
"""What the command writes into output_dir (removed first when the directory is reused)."""


def _train_base(cfg: TokenizerCommandConfig, run_dir: Path) -> Path:
    from kopretrain.tokenizer.corpus import sample_corpus
    from kopretrain.tokenizer.train_spm import build_base_tokenizer

    sample_cfg = dataclasses.replace(cfg.sample, domain=cfg.train_base.domain)
    texts = sample_corpus([cfg.train_base.corpus], sample_cfg).texts
    return build_base_tokenizer(texts, cfg.train_base.vocab_size, run_dir / "base", cfg.train_base.model_type,
                                seed=cfg.spm.seed)


def _readable(token: str, base_kind: str) -> str:
    """A byte-level token ('ĠìķĪ...') as text; SentencePiece pieces ('▁안녕') are readable as they are."""
    if base_kind == "sentencepiece":
        return token
    from kopretrain.tokenizer.merge_bpe import byte_decoder

    table = byte_decoder()
    if any(ch not in table for ch in token):
        return token
    return bytes(table[ch] for ch in token).decode("utf-8", "replace")


def _identical_without_hangul(base, expanded, texts: list[str]) -> dict:
    from kopretrain.tokenizer.select import has_hangul

    plain = [t for t in texts if not has_hangul(t)]
    same = sum(a == b for a, b in zip(base.encode_batch(plain), expanded.encode_batch(plain))) if plain else 0
    return {"num_docs": len(plain), "num_identical": same}


def run_tokenizer(cfg: TokenizerCommandConfig, run_dir: Path) -> dict:
    from kopretrain.eval.heldout import read_heldout
    from kopretrain.tokenizer.corpus import sample_corpus
    from kopretrain.tokenizer.efficiency import format_table, measure_all, ratios
    from kopretrain.tokenizer.expand import expand, resolve_base
    from kopretrain.tokenizer.load import load_tokenizer
    from kopretrain.tracking import start_run

    # Check every input before the slow parts.
    base_path = cfg.base
    if base_path:
        resolve_base(base_path)
    for key in ("extra_model", "reference", "model_dir"):
        value = getattr(cfg, key)
        if value and not resolve_path(value).exists():
            raise UserError(f"{key}: not found: {value}")
    heldout = {d: read_heldout(p, cfg.max_heldout_docs) for d, p in cfg.heldout.items()}
    sample = sample_corpus(cfg.corpus, cfg.sample)

    tracker = start_run(cfg.tracking, run_name=f"tokenizer-{run_dir.name}", config=cfg)
    report: dict = {}
    if not base_path:
        base_path = str(_train_base(cfg, run_dir))
        report["trained_base"] = base_path
    base = resolve_base(base_path)
    output_dir = Path(cfg.output_dir) if cfg.output_dir else run_dir / "tokenizer"
    if base.file.resolve().parent == output_dir.resolve():
        raise UserError(f"output_dir: {output_dir} holds the base tokenizer; write the expanded one elsewhere")
    for name in OUTPUT_FILES:  # a rerun overwrites: no file of an earlier tokenizer may stay next to the new one
        (output_dir / name).unlink(missing_ok=True)
    info = expand(base, sample.texts, cfg, output_dir)
    report.update({k: v for k, v in info.items() if k != "added_tokens"})
    report["output_dir"] = str(output_dir)
    report["first_added_tokens"] = [_readable(t, base.kind) for t in info["added_tokens"][:50]]
    report["corpus"] = {"files": sample.files, "skipped_files": sample.skipped_files,
                        "num_docs_seen": sample.num_docs_seen, "num_docs_sampled": len(sample.texts)}

    tokenizers = {"base": load_tokenizer(base.file), "expanded": load_tokenizer(output_dir)}
    if cfg.reference:
        tokenizers["reference"] = load_tokenizer(cfg.reference)
    table = measure_all(tokenizers, heldout)
    report["efficiency"] = table
    report["tokens_ratio_base_to_expanded"] = ratios(table)
    report["identical_without_hangul"] = {d: _identical_without_hangul(tokenizers["base"], tokenizers["expanded"], t)
                                          for d, t in heldout.items()}
    print(format_table(table, {n: t.vocab_size for n, t in tokenizers.items()}))
    print(f"added {info['num_added']} tokens (+{info['num_placeholders']} placeholders): "
          f"{info['base_vocab_size']} -> {info['vocab_size']}; written to {output_dir}")
    merge = info.get("merge")
    if merge and cfg.extra_model:
        print(f"extra_model ({merge['mode']}): {merge['num_added_regular']} pieces and {merge['num_added_user_defined']} "
              f"user-defined symbols added, {merge['num_skipped_in_base']} already in the base, "
              f"{merge['num_normalization_adjusted']} in the base's normalized form, {merge['num_unreachable']} "
              f"unreachable (not added; reasons in report.json 'merge')")

    if cfg.model_dir:
        from kopretrain.tokenizer.embeddings import resize_model_dir

        report["model"] = resize_model_dir(resolve_path(cfg.model_dir), base.file, output_dir, run_dir / "model",
                                           pad_to_multiple_of=cfg.pad_to_multiple_of, output_init=cfg.output_init)
        report["model"]["path"] = str(run_dir / "model")

    metrics = {"vocab_size": info["vocab_size"], "num_added": info["num_added"]}
    for name, row in table.items():
        metrics.update({f"{name}_{d}_tokens_per_char": v["tokens_per_char"] for d, v in row.items() if d != "example_tokens"})
    tracker.log_metrics(metrics)
    report["mlflow_run_id"] = tracker.run_id
    tracker.log_dict(report, "report.json")
    tracker.end()
    return report
