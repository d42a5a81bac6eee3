"""What each training stage trains (EEVE-style staged training), as plain torch.

    names = embedding_param_names(model)                  # input embeddings + lm_head (once if tied)
    plan = plan_stage(model, stage, names, num_base_rows, weight_decay=0.1)
    plan.apply(model)                                     # set requires_grad
    strategy.start_stage(plan.param_groups(model), plan.freeze)

`TRAINABLE` is the table from `stages[].trainable` to the parameters a stage trains:
- `all`: every parameter; weight decay on matrices (ndim >= 2), none on norms and biases.
- `new_embeddings`: only the input embedding and output (lm_head) matrices, and of those only
  the rows of the new vocabulary: gradients of rows below `num_base_rows` are zeroed before
  every optimizer step, and the stage uses no weight decay, because AdamW's decoupled decay
  would shrink the frozen base rows even with a zero gradient. With a zero gradient and a
  fresh optimizer (each stage starts one) Adam's update of those rows is exactly 0, so the
  base rows and every other parameter stay bit-identical through the stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class RowFreeze:
    """Rows [0, num_base_rows) of the named (2-D, vocab-major) parameters keep their values
    (the strategies zero those gradient rows before every optimizer step)."""

    param_names: list[str] = field(default_factory=list)
    num_base_rows: int = 0


def _all(name: str, embedding_names: set[str]) -> bool:
    return True


def _new_embeddings(name: str, embedding_names: set[str]) -> bool:
    return name in embedding_names


# stages[].trainable -> predicate (parameter name, embedding parameter names) -> trained?
TRAINABLE = {"all": _all, "new_embeddings": _new_embeddings}


def embedding_param_names(model: torch.nn.Module) -> list[str]:
    """FQNs of the input embedding and output head weights (one name when they are tied)."""
    wanted = [model.get_input_embeddings().weight]
    out_emb = model.get_output_embeddings()
    if out_emb is not None:
        wanted.append(out_emb.weight)
    names = []
    for name, param in model.named_parameters():  # named_parameters lists a tied weight once
        if any(param is w for w in wanted):
            names.append(name)
    assert names, "could not find the embedding parameters"
    return names


@dataclass
class StagePlan:
    """The trainable parameter names, weight decay and frozen rows of one stage."""

    trainable: set[str]
    weight_decay: float
    freeze: RowFreeze

    def apply(self, model: torch.nn.Module) -> int:
        """Set requires_grad per the plan; returns the number of trainable parameters (elements)."""
        count = 0
        for name, param in model.named_parameters():
            param.requires_grad_(name in self.trainable)
            if name in self.trainable:
                count += param.numel()
        return count

    def param_groups(self, model: torch.nn.Module) -> list[dict]:
        """AdamW groups: decay on matrices, none on vectors (norm weights, biases)."""
        decay, no_decay = [], []
        for name, param in model.named_parameters():
            if name in self.trainable:
                (decay if param.ndim >= 2 else no_decay).append(param)
        groups = [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return [g for g in groups if g["params"]]


def plan_stage(model: torch.nn.Module, trainable: str, embedding_names: list[str], num_base_rows: int | None,
               weight_decay: float) -> StagePlan:
    """The plan for a stage training `trainable` (a key of TRAINABLE)."""
    select = TRAINABLE[trainable]
    names = {n for n, _ in model.named_parameters() if select(n, set(embedding_names))}
    if trainable == "new_embeddings":
        assert num_base_rows, "a new_embeddings stage needs the number of base rows (checked by the driver)"
        return StagePlan(names, 0.0, RowFreeze(list(embedding_names), int(num_base_rows)))
    return StagePlan(names, weight_decay, RowFreeze())
