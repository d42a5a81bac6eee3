"""Korean vocabulary expansion end to end, as plain functions (the CLI and the demo call these).

    base   = resolve_base("../shared/tokenizers/llama2/tokenizer.model")
    result = expand(base, korean_texts, cfg, Path("out/tokenizer"))

1. The base is a SentencePiece model (file, or `tokenizer.model` in an HF directory) or a
   Hugging Face `tokenizer.json` (file or directory).
2. A Korean model is trained on the sample (`train_spm` for SentencePiece bases, a BPE in the
   base's alphabet for tokenizer.json bases), or `cfg.extra_model`'s pieces are used (all of
   them unless `num_new_tokens` is set; `merge_sentencepiece.merge_pieces`).
3. New tokens are merged in (`merge_sentencepiece` / `merge_bpe`) and the directory is saved
   (`hf_save`) with `kopretrain_tokenizer.json`: base path and vocabulary size, tokens added.

No Ray, Hydra or MLflow here; `command.py` adds tracking and the printed table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kopretrain.config.tokenizer import TokenizerCommandConfig
from kopretrain.errors import UserError
from kopretrain.paths import resolve_path

SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token")
INFO_FILE = "kopretrain_tokenizer.json"


@dataclass
class Base:
    kind: str
    """'sentencepiece', 'tokenizer.json' or 'tiktoken' (Llama-3's tokenizer.model, converted to tokenizer.json form)."""
    file: Path
    """The tokenizer.model / tokenizer.json file."""
    directory: Path | None
    """The HF directory it came from (its tokenizer_config.json is carried over), if any."""


def _is_sentencepiece(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(1) == b"\n"  # ModelProto field 1 (pieces), wire type 2


def _model_kind(path: Path) -> str | None:
    from kopretrain.tokenizer.tiktoken_convert import is_tiktoken_file

    return "sentencepiece" if _is_sentencepiece(path) else "tiktoken" if is_tiktoken_file(path) else None


def resolve_base(path: str | Path) -> Base:
    """Classify a base tokenizer path; UserError naming the path when it is not one."""
    p = resolve_path(path)
    if p.is_dir():
        model_kind = _model_kind(p / "tokenizer.model") if (p / "tokenizer.model").is_file() else None
        if model_kind == "sentencepiece":
            return Base("sentencepiece", p / "tokenizer.model", p)
        if (p / "tokenizer.json").is_file():
            return Base("tokenizer.json", p / "tokenizer.json", p)
        if model_kind == "tiktoken":
            return Base("tiktoken", p / "tokenizer.model", p)
        raise UserError(f"base: no tokenizer.model or tokenizer.json in {p}")
    if not p.is_file():
        raise UserError(f"base: tokenizer not found: {p}")
    if p.suffix == ".json":
        return Base("tokenizer.json", p, None)
    kind = _model_kind(p)
    if kind:
        return Base(kind, p, None)
    raise UserError(f"base: unrecognised tokenizer file (not SentencePiece, tiktoken or tokenizer.json): {p}")


def _json_special_tokens(base: Base, tokenizer_json: dict) -> dict:
    """Special tokens of a tokenizer.json base: from its directory's configs, else guessed."""
    from kopretrain.tokenizer.load import BOS_CANDIDATES, EOS_CANDIDATES

    found: dict = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = base.directory / name if base.directory else None
        if path and path.is_file():
            config = json.loads(path.read_text(encoding="utf-8"))
            for key in SPECIAL_KEYS:
                value = config.get(key)
                value = value.get("content") if isinstance(value, dict) else value
                if isinstance(value, str):
                    found.setdefault(key, value)
    known = set(tokenizer_json["model"]["vocab"]) | {t["content"] for t in tokenizer_json.get("added_tokens", [])}
    for key, candidates in (("eos_token", EOS_CANDIDATES), ("bos_token", BOS_CANDIDATES)):
        if key not in found:
            hit = next((c for c in candidates if c in known), None)
            if hit:
                found[key] = hit
    return found


def _check_sentencepiece_dir(base: Base, num_pieces: int) -> None:
    """An HF directory whose tokenizer.json has tokens above the SentencePiece model would collide."""
    path = base.directory / "tokenizer.json" if base.directory else None
    if path and path.is_file():
        extra = [t for t in json.loads(path.read_text(encoding="utf-8")).get("added_tokens", []) if t["id"] >= num_pieces]
        if extra:
            raise UserError(f"base: {path} adds tokens above the SentencePiece model ({extra[0]['content']!r} "
                            f"id {extra[0]['id']}); expand its tokenizer.json instead (base=<that file>)")


def expand(base: Base, texts: list[str], cfg: TokenizerCommandConfig, output_dir: Path) -> dict:
    """Expand `base` with Korean tokens learnt from `texts`; write the directory; return facts."""
    from kopretrain.tokenizer import hf_save

    if base.kind == "sentencepiece":
        from collections import Counter

        from kopretrain.tokenizer.merge_sentencepiece import UNIGRAM, merge_pieces, piece_counts, read_model
        from kopretrain.tokenizer.train_spm import train_sentencepiece

        proto = read_model(base.file)
        _check_sentencepiece_dir(base, len(proto.pieces))
        korean = read_model(resolve_path(cfg.extra_model)) if cfg.extra_model else train_sentencepiece(texts, cfg.spm)
        num_new = cfg.num_new_tokens_or_default
        # Frequencies rank a subset, and give a Unigram base's new pieces their scores.
        needs_counts = num_new is not None or proto.trainer_spec.model_type == UNIGRAM
        counts = piece_counts(korean, texts) if needs_counts else Counter()
        result = merge_pieces(proto, korean, counts, num_new_tokens=num_new,
                              pad_to_multiple_of=cfg.pad_to_multiple_of, require_hangul=cfg.require_hangul)
        hf_save.save_spm_dir(result.proto, output_dir, hf_save.read_base_config(base.directory))
        base_size, korean_size = len(proto.pieces), len(korean.pieces)
    else:
        from kopretrain.tokenizer.merge_bpe import merge_bpe_json

        if cfg.extra_model:
            raise UserError("extra_model: merging a SentencePiece model needs a SentencePiece base")
        if base.kind == "tiktoken":
            from kopretrain.tokenizer.tiktoken_convert import tiktoken_to_json

            base_json = tiktoken_to_json(base.file)
        else:
            base_json = json.loads(base.file.read_text(encoding="utf-8"))
        result = merge_bpe_json(base_json, texts, train_vocab_size=cfg.spm.vocab_size, num_new_tokens=cfg.num_new_tokens_or_default,
                                pad_to_multiple_of=cfg.pad_to_multiple_of, require_hangul=cfg.require_hangul)
        hf_save.save_json_dir(result.tokenizer_json, output_dir, _json_special_tokens(base, base_json),
                              hf_save.read_base_config(base.directory))
        base_size, korean_size = result.first_new_id, cfg.spm.vocab_size
    info = {
        "base": str(base.file),
        "base_kind": base.kind,
        "base_vocab_size": base_size,
        "vocab_size": base_size + len(result.added) + result.num_placeholders,
        "num_added": len(result.added),
        "num_placeholders": result.num_placeholders,
        "num_candidates": result.num_candidates,
        "num_user_defined": getattr(result, "num_user_defined", 0),
        "korean_model": cfg.extra_model or f"trained ({cfg.spm.model_type if base.kind == 'sentencepiece' else 'bpe'})",
        "korean_model_size": korean_size,
        "added_tokens": result.added,
    }
    if getattr(result, "report", None):
        info["merge"] = result.report
    (output_dir / INFO_FILE).write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return info
