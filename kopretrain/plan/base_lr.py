"""Peak pretraining learning rates of known base models, for `optim.lr_relative_to_base`.

    base_peak_lr("meta-llama/Llama-2-7b-hf")      # 3e-4
    base_peak_lr("/models/Mistral-7B-v0.1")       # None: Mistral never published its peak LR

Continual pretraining re-warms the learning rate to a value chosen relative to the base's own
peak (Ibrahim et al. 2024, "Simple and Scalable Strategies to Continually Pre-train Large
Language Models", arXiv:2403.08763, study re-warming and re-decaying this way). With
`optim.lr_relative_to_base=true`, `optim.lr` (and `stages[].lr`, `optim.lr_warmup_start`) are
multiples of that peak: `optim.base_peak_lr`, or else this table, matched on the last component
of `model.name_or_path` (a hub id or a local directory named like one), case-insensitively.

Only peaks the model's authors published are listed, each with its source. Mistral 7B's was
never published (neither paper nor model card); Gemma, Yi, SOLAR, Qwen and Polyglot-Ko are not in
the table yet: give `optim.base_peak_lr` for them. Torch-free (the config imports it).
"""

from __future__ import annotations

import re

# (pattern on the lowercased last path component, peak learning rate, source)
KNOWN_BASE_PEAK_LRS: list[tuple[str, float, str]] = [
    (r"llama-2-(7|13)b", 3.0e-4, "Touvron et al. 2023, Llama 2, Table 1"),
    (r"llama-2-(34|70)b", 1.5e-4, "Touvron et al. 2023, Llama 2, Table 1"),
    (r"llama-(7|13)b", 3.0e-4, "Touvron et al. 2023, LLaMA, Table 2"),
    (r"llama-(30|33|65)b", 1.5e-4, "Touvron et al. 2023, LLaMA, Table 2"),
    (r"tinyllama-1\.1b", 4.0e-4, "Zhang et al. 2024, TinyLlama, section 2.3"),
    (r"olmo-1b", 4.0e-4, "Groeneveld et al. 2024, OLMo, Table 1"),
    (r"olmo-7b", 3.0e-4, "Groeneveld et al. 2024, OLMo, Table 1"),
    (r"falcon-7b", 6.0e-4, "tiiuae/falcon-7b model card, training hyperparameters"),
    (r"pythia-70m", 1.0e-3, "Biderman et al. 2023, Pythia, Table 1"),
    (r"pythia-160m", 6.0e-4, "Biderman et al. 2023, Pythia, Table 1"),
    (r"pythia-(410m|1b)", 3.0e-4, "Biderman et al. 2023, Pythia, Table 1"),
    (r"pythia-1\.4b", 2.0e-4, "Biderman et al. 2023, Pythia, Table 1"),
    (r"pythia-2\.8b", 1.6e-4, "Biderman et al. 2023, Pythia, Table 1"),
    (r"pythia-(6\.9b|12b)", 1.2e-4, "Biderman et al. 2023, Pythia, Table 1"),
]


def _base_name(name_or_path: str) -> str:
    return name_or_path.rstrip("/").rsplit("/", 1)[-1].lower()


def lookup(name_or_path: str) -> tuple[float, str] | None:
    """(peak LR, source) of the first pattern that matches the model's name, followed by the end or -/_ (None = unknown)."""
    name = _base_name(name_or_path)
    for pattern, lr, source in KNOWN_BASE_PEAK_LRS:
        if re.fullmatch(rf"{pattern}([-_].*)?", name):
            return lr, source
    return None


def base_peak_lr(name_or_path: str) -> float | None:
    """The base model's published peak learning rate, or None when the table does not know it."""
    found = lookup(name_or_path)
    return found[0] if found else None


def lr_scale(relative: bool, base_peak: float, name_or_path: str) -> float:
    """What `optim.lr` multiplies: 1 (absolute), `base_peak` when given, else the table's value."""
    if not relative:
        return 1.0
    value = base_peak or base_peak_lr(name_or_path)
    assert value, "the config checks that the base peak LR is known"
    return float(value)
