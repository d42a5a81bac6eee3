"""Resize a causal LM's embeddings for an expanded tokenizer and initialise the new rows.

`resize_and_init` grows the input embedding and the output layer (lm_head) of an unsharded
Hugging Face model to the new vocabulary, padded to a multiple, *before* any FSDP/DeepSpeed
sharding. Each new token's input row is the mean of the base rows of the pieces the base
tokenizer splits it into (the base BPE run on the token's own string, so "▁안녕" becomes
"▁", byte pieces...); its lm_head row follows `output_init` (table `OUTPUT_INITS`): the same
mean, or EEVE's choice, the row of the first of those pieces (predicting the new token starts
where predicting its first piece did). Padding rows and unused placeholder tokens get the
mean of all base rows. Tied embeddings (Gemma, small Qwen2) stay tied: only the input rule
applies.

    info = resize_and_init(model, base_tok, new_tok, pad_to_multiple_of=64, output_init="mean")

The same rows for a model that is built sharded (kopretrain/train/model_init.py): the pure
`plan_new_rows` (which rows, from which base pieces; runs on the driver), `new_row_values`
(their values from the base rows) and `write_rows` (into a full matrix or this rank's shard).

Training the new rows first (EEVE's staged training) is `kopretrain.train.stages`: a
`new_embeddings` stage trains only rows >= info["num_base_rows"] of these matrices.

Pure torch + transformers; tested in tests/tokenizer/test_embeddings.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from kopretrain.errors import UserError
from kopretrain.tokenizer.select import PLACEHOLDER, round_up

_PLACEHOLDER_RE = re.compile(re.escape(PLACEHOLDER).replace(r"\{\}", r"\d+"))


def _mean_rows(rows: torch.Tensor, ids: list[int]) -> torch.Tensor:
    return rows[ids].mean(dim=0)


def _first_row(rows: torch.Tensor, ids: list[int]) -> torch.Tensor:
    return rows[ids[0]]


OUTPUT_INITS: dict[str, Callable[[torch.Tensor, list[int]], torch.Tensor]] = {
    "mean": _mean_rows,
    "first_piece": _first_row,
}
"""lm_head init rule for a new token from the base rows of its base pieces."""


def backend(tokenizer: Any):
    """A `tokenizers.Tokenizer` from an HF tokenizer object, a Tokenizer, or a path (dir, .json, .model)."""
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    if hasattr(tokenizer, "backend_tokenizer"):
        return tokenizer.backend_tokenizer
    p = Path(tokenizer)
    if p.is_dir() and (p / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(p / "tokenizer.json"))
    if p.is_dir() and (p / "tokenizer.model").is_file():
        p = p / "tokenizer.model"
    if p.is_file() and p.suffix == ".json":
        return Tokenizer.from_file(str(p))
    from kopretrain.tokenizer.tiktoken_convert import is_tiktoken_file, tiktoken_to_json

    if p.is_file() and is_tiktoken_file(p):
        return Tokenizer.from_str(json.dumps(tiktoken_to_json(p)))
    if p.is_file():
        from kopretrain.tokenizer.hf_save import spm_to_tokenizer
        from kopretrain.tokenizer.merge_sentencepiece import read_model

        return spm_to_tokenizer(read_model(p))
    raise UserError(f"tokenizer not found: {tokenizer}")


def base_pieces(base, token: str) -> list[int]:
    """Ids of the base pieces that the base model splits `token` (a vocabulary string) into."""
    return [t.id for t in base.model.tokenize(token)]


def _check_extends(base, new, num_base: int) -> None:
    for i in range(num_base):
        if base.id_to_token(i) != new.id_to_token(i):
            raise UserError(f"the new tokenizer does not extend the base: id {i} is {new.id_to_token(i)!r}, "
                            f"was {base.id_to_token(i)!r}")


@dataclass
class NewRows:
    """Which embedding rows an expanded tokenizer adds, and how each is initialised (plain data, picklable).

    Rows [0, num_base) are the base vocabulary and keep their values; `rows[k]` gets the mean of
    the base rows `pieces[k]` (its base pieces), or the mean of all base rows when `pieces[k]` is
    empty (placeholder token or padding row). Rows in [num_vocab, old_rows) not listed are padding
    rows the checkpoint already had: they keep whatever it holds.
    """

    num_base: int
    num_vocab: int
    old_rows: int
    num_rows: int
    rows: list[int] = field(default_factory=list)
    pieces: list[list[int]] = field(default_factory=list)

    def info(self, tied: bool, output_init: str) -> dict:
        return {"num_base_rows": self.num_base, "num_rows": self.num_rows, "num_new_tokens": self.num_vocab - self.num_base,
                "num_placeholder_rows": sum(1 for p in self.pieces if not p), "tied": tied,
                "output_init": "tied" if tied else output_init}


def plan_new_rows(base_tokenizer, new_tokenizer, old_rows: int, *, pad_to_multiple_of: int = 64) -> NewRows:
    """The new rows of a model with `old_rows` embedding rows for `new_tokenizer` (which extends `base_tokenizer`).

    Which rows are new comes from the base tokenizer's length, not from the matrix: a checkpoint
    whose padded matrix already holds the expanded vocabulary (Polyglot-Ko: 30,003 tokens in
    30,080 rows) still gets its new tokens initialised.
    """
    base, new = backend(base_tokenizer), backend(new_tokenizer)
    num_base = base.get_vocab_size(with_added_tokens=True)
    num_vocab = new.get_vocab_size(with_added_tokens=True)
    _check_extends(base, new, num_base)
    if old_rows < num_base:
        raise UserError(f"the model has {old_rows} embedding rows but the base tokenizer {num_base} tokens")
    plan = NewRows(num_base, num_vocab, old_rows, max(old_rows, round_up(num_vocab, pad_to_multiple_of)))
    for i in range(num_base, plan.num_rows):
        token = new.id_to_token(i) if i < num_vocab else None
        pieces = [] if token is None or _PLACEHOLDER_RE.fullmatch(token) else base_pieces(base, token)
        if pieces or token is not None or i >= old_rows:  # else: a padding row the base model already had
            plan.rows.append(i)
            plan.pieces.append(pieces)
    return plan


@torch.no_grad()
def new_row_values(base_rows: torch.Tensor, plan: NewRows, rule: str = "mean") -> torch.Tensor:
    """[len(plan.rows), hidden] fp32 values of the new rows from the base rows ([num_base, hidden]) by `rule` (OUTPUT_INITS)."""
    base_rows = base_rows.detach().float()
    mean = base_rows.mean(dim=0)
    init = OUTPUT_INITS[rule]
    values = [init(base_rows, pieces) if pieces else mean for pieces in plan.pieces]
    return torch.stack(values) if values else base_rows.new_zeros((0, base_rows.shape[1]))


@torch.no_grad()
def write_rows(weight: torch.Tensor, rows: list[int], values: torch.Tensor) -> None:
    """weight[rows] = values, for a full matrix or for this rank's shard of one (a DTensor sharded on dim 0)."""
    from torch.distributed.tensor import DTensor

    if not rows:
        return
    index = torch.tensor(rows)
    if isinstance(weight, DTensor):
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        shape, offset = compute_local_shape_and_global_offset(weight.shape, weight.device_mesh, weight.placements)
        local = weight.to_local()
        assert tuple(local.shape) == tuple(shape), f"unexpected shard layout {tuple(local.shape)} vs {tuple(shape)}"
        here = (index >= offset[0]) & (index < offset[0] + shape[0])
        local[(index[here] - offset[0]).to(local.device)] = values[here].to(local.device, local.dtype)
        return
    weight[index.to(weight.device)] = values.to(weight.device, weight.dtype)


@torch.no_grad()
def resize_and_init(model, base_tokenizer, new_tokenizer, *, pad_to_multiple_of: int = 64, output_init: str = "mean") -> dict:
    """Resize `model` (unsharded HF causal LM) to `new_tokenizer` and initialise the new rows.

    Returns {"num_base_rows": first new id (= base vocabulary size), "num_rows": new matrix
    rows, "num_new_tokens", "num_placeholder_rows", "tied", "output_init"}.
    """
    if output_init not in OUTPUT_INITS:
        raise UserError(f"output_init: {output_init!r} is not one of {sorted(OUTPUT_INITS)}")
    old_in = model.get_input_embeddings().weight
    plan = plan_new_rows(base_tokenizer, new_tokenizer, old_in.shape[0], pad_to_multiple_of=pad_to_multiple_of)
    return init_rows(model, plan, output_init)


@torch.no_grad()
def init_rows(model, plan: NewRows, output_init: str = "mean") -> dict:
    """Resize an unsharded `model` to `plan.num_rows` and write the new rows (the rows as `plan_new_rows` decided)."""
    old_in = model.get_input_embeddings().weight
    out_layer = model.get_output_embeddings()
    tied = out_layer is None or out_layer.weight.data_ptr() == old_in.data_ptr()
    in_values = new_row_values(old_in[: plan.num_base], plan, "mean")
    out_values = None if tied else new_row_values(out_layer.weight[: plan.num_base], plan, output_init)
    if plan.num_rows != old_in.shape[0]:
        model.resize_token_embeddings(plan.num_rows, mean_resizing=False)
    w_in = model.get_input_embeddings().weight
    write_rows(w_in, plan.rows, in_values)
    if not tied:
        write_rows(model.get_output_embeddings().weight, plan.rows, out_values)
    out_now = model.get_output_embeddings()
    assert not tied or out_now is None or out_now.weight.data_ptr() == w_in.data_ptr(), "tied embeddings came untied"
    return plan.info(tied, output_init)


def resize_model_dir(model_dir: str | Path, base_tokenizer, new_tokenizer_dir: str | Path, out_dir: str | Path,
                     *, pad_to_multiple_of: int = 64, output_init: str = "mean") -> dict:
    """Load an HF model dir, resize it for `new_tokenizer_dir`, save model + tokenizer to `out_dir`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (Path(model_dir) / "config.json").is_file():
        raise UserError(f"not a Hugging Face model directory (no config.json): {model_dir}")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    new_tok = AutoTokenizer.from_pretrained(str(new_tokenizer_dir))
    info = resize_and_init(model, base_tokenizer, new_tok, pad_to_multiple_of=pad_to_multiple_of, output_init=output_init)
    model.save_pretrained(str(out_dir))
    new_tok.save_pretrained(str(out_dir))
    return info
