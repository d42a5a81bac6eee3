"""The model to train: planned on the driver (cheap checks), built on every worker, exported at the end.

    plan = plan_model(cfg)                   # driver: configs and tokenizers only, no weights; UserErrors here
    info = strategy.build(plan, seed)        # worker: each rank reads only what it keeps (train/model_init.py)
    model, info = build_model(plan, seed)    # or the whole model on this rank (from scratch; the reference)
    export_model(state_dict, plan, out_dir)  # rank 0: save_pretrained + the tokenizer beside it

A from-scratch model comes from `model.arch` (HF config fields incl. `model_type`; the
vocabulary defaults to the tokenizer's) with weights drawn under `torch.manual_seed(seed)`, so
every worker builds the same one. A pretrained one is loaded from `model.name_or_path`. When
the tokenizer adds tokens to the base model's (an expanded Korean vocabulary; decided by the
base tokenizer's length, since a padded matrix may already have room for them), the driver
plans the new rows (`kopretrain.tokenizer.embeddings.plan_new_rows`: `ModelPlan.new_rows`,
`num_rows`) and the workers initialise them while loading.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from kopretrain.config.train import TrainConfig
from kopretrain.errors import UserError
from kopretrain.paths import model_path, resolve_path



@dataclass
class ModelPlan:
    """What the workers build, decided (and checked) on the driver."""

    name_or_path: str
    """Resolved model directory or hub id ('' = from arch)."""
    arch: dict
    tokenizer_dir: str
    tokenizer_len: int
    model_vocab_size: int
    """Vocabulary of the model before any resize."""
    needs_resize: bool
    """The embedding matrices grow (num_rows > model_vocab_size)."""
    num_base_rows: int | None
    pad_vocab_to_multiple_of: int = 64
    new_rows_init: str = "mean"
    """kopretrain.tokenizer.embeddings.OUTPUT_INITS key for the new output rows."""
    gradient_checkpointing: bool = False
    """Resolved model.gradient_checkpointing (auto = on for a pretrained model)."""
    special_ids: dict = field(default_factory=dict)
    lora: object = None
    """kopretrain.train.adapters.LoraPlan with peft=lora (new_rows filled in by build_model), else None."""
    new_rows: object = None
    """kopretrain.tokenizer.embeddings.NewRows: the rows the expanded tokenizer adds (None: none)."""
    num_rows: int = 0
    """Embedding rows of the model the workers train (0 = model_vocab_size)."""
    safetensors_dir: str = ""
    """Where the workers read the weights when not from name_or_path: a .bin checkpoint converted on the driver (train/convert_bin.py)."""

    def __post_init__(self):
        self.num_rows = self.num_rows or self.model_vocab_size


def _tokenizer_metadata_base_rows(tokenizer_dir: Path) -> int | None:
    """`base_vocab_size` from the tokenizer command's kopretrain_tokenizer.json, if there is one."""
    from kopretrain.tokenizer.expand import INFO_FILE

    meta = tokenizer_dir / INFO_FILE
    if not meta.exists():
        return None
    value = json.loads(meta.read_text(encoding="utf-8")).get("base_vocab_size")
    return int(value) if isinstance(value, int) else None


def config_error_reason(exc: BaseException) -> str:
    """The first line that says what is wrong in a transformers config error (one line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    reason = lines[1] if lines[0].endswith(":") and len(lines) > 1 else lines[0]  # strict dataclass: 'validator ...:'
    return reason.removeprefix("ValueError: ").split(". Should contain one of")[0]


def arch_config(arch: dict, vocab_size: int | None = None, special_ids: dict | None = None, key: str = "model.arch"):
    """The HF config of a from-scratch `arch` (model_type + fields); UserError naming `key` if transformers refuses it."""
    from transformers import AutoConfig

    arch = dict(arch)
    model_type = arch.pop("model_type", None)
    if not model_type:
        raise UserError(f"{key}: needs model_type (e.g. llama)")
    if vocab_size:
        arch.setdefault("vocab_size", vocab_size)
    for name, value in (special_ids or {}).items():
        if value is not None:
            arch.setdefault(f"{name}_token_id", value)
    try:
        return AutoConfig.for_model(model_type, **arch)
    except Exception as exc:  # ValueError, TypeError, huggingface_hub's StrictDataclass*Error: all say the reason
        raise UserError(f"{key}: {config_error_reason(exc)}") from None


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json", "tiktoken.model")


def _load_tokenizer(path: str, key: str, what: str):
    """AutoTokenizer from `path`; a one-line UserError naming `key` when it has no tokenizer."""
    from transformers import AutoTokenizer

    local = Path(path)
    if local.is_dir() and not any((local / f).is_file() for f in TOKENIZER_FILES):
        raise UserError(f"{key}: {what} {local} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...)")
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{key}: cannot load a tokenizer from {path} ({str(exc).splitlines()[0]})") from None


def _check_fsdp_blocks(cfg: TrainConfig, hf_config) -> None:
    """FSDP2 shards per decoder layer (`_no_split_modules`): refuse a model class that names none, here."""
    if cfg.strategy.name != "fsdp":
        return
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        cls = MODEL_FOR_CAUSAL_LM_MAPPING[type(hf_config)]
    except KeyError:  # remote code or no causal LM class: the worker's own check applies
        return
    if not getattr(cls, "_no_split_modules", None):
        raise UserError(f"strategy.name: fsdp shards each decoder layer, but {cls.__name__} does not name its layers "
                        "(_no_split_modules); use strategy=ddp or deepspeed_zero3")


def _plan_new_rows(cfg: TrainConfig, name: str, tok_path: str, tokenizer, vocab: int):
    """The rows the tokenizer adds to the base model's vocabulary, decided by the base tokenizer's length
    (not by the matrix: a padded matrix can already hold the new tokens). None when it adds none."""
    from kopretrain.tokenizer.embeddings import OUTPUT_INITS, plan_new_rows

    meta_base = _tokenizer_metadata_base_rows(Path(tok_path))
    if tok_path == name or (meta_base is not None and meta_base >= len(tokenizer) and len(tokenizer) <= vocab):
        return None  # the base model's own tokenizer, or one that adds nothing
    base_tok = _load_tokenizer(name, "model.name_or_path", "the base model (its tokenizer splits the new tokens into base pieces)")
    if len(base_tok) >= len(tokenizer) and len(tokenizer) <= vocab:
        return None
    if meta_base is not None and meta_base != len(base_tok):
        raise UserError(f"tokenizer: {tok_path} extends a base of {meta_base} tokens (kopretrain_tokenizer.json), but the tokenizer "
                        f"of model.name_or_path has {len(base_tok)}")
    if cfg.model.new_rows_init not in OUTPUT_INITS:
        raise UserError(f"model.new_rows_init: {cfg.model.new_rows_init!r} is not one of {sorted(OUTPUT_INITS)}")
    try:
        return plan_new_rows(base_tok, tokenizer, vocab, pad_to_multiple_of=cfg.model.pad_vocab_to_multiple_of)
    except UserError as exc:
        raise UserError(f"tokenizer: {exc}") from None


def plan_model(cfg: TrainConfig) -> ModelPlan:
    """Check the model and tokenizer against each other without loading weights."""
    from kopretrain.hub import load_config

    name = cfg.model.name_or_path
    if name:
        name = model_path(name)  # a path-like value that exists nowhere: one line naming the key, not the hub's
        name = str(Path(name).resolve()) if Path(name).exists() else name
        try:
            hf_config = load_config(name)  # a hub id: the cache first, one line when the hub cannot be reached
        except (OSError, ValueError) as exc:
            raise UserError(f"model.name_or_path: cannot load a model config from {name!r} ({str(exc).splitlines()[0]})") from None
        _check_fsdp_blocks(cfg, hf_config)
    tok_path = str(resolve_path(cfg.tokenizer).resolve()) if cfg.tokenizer else name
    if cfg.tokenizer and not Path(tok_path).is_dir():
        raise UserError(f"tokenizer: not a tokenizer directory: {tok_path}")
    tokenizer = _load_tokenizer(tok_path, "tokenizer", "the model directory" if not cfg.tokenizer else "directory")
    tok_len = len(tokenizer)
    if name:
        vocab = int(hf_config.vocab_size)
    else:
        vocab = int(cfg.model.arch.get("vocab_size") or tok_len)
    if tok_len > vocab and not name:
        raise UserError(f"model.arch.vocab_size: {vocab} is smaller than the tokenizer ({tok_len} tokens)")
    new_rows = _plan_new_rows(cfg, name, tok_path, tokenizer, vocab) if name else None
    num_rows = new_rows.num_rows if new_rows is not None else vocab
    base_rows = (cfg.model.num_base_rows or _tokenizer_metadata_base_rows(Path(tok_path))
                 or (new_rows.num_base if new_rows is not None else None))
    specials = {k: getattr(tokenizer, f"{k}_token_id") for k in ("bos", "eos", "pad")}
    if not name:  # the workers build this config: refuse a bad arch here, in one line
        hf_config = arch_config(cfg.model.arch, vocab, specials)
        _check_fsdp_blocks(cfg, hf_config)
    lora = _plan_lora(cfg, hf_config.model_type) if cfg.peft.method == "lora" else None
    from kopretrain.train.loss import check_loss  # the loss runs on this model type (one line, before Ray)

    check_loss(cfg.loss.name, hf_config.model_type, cfg.scale.use_gpu)
    return ModelPlan(
        name_or_path=name, arch=dict(cfg.model.arch), tokenizer_dir=str(Path(tok_path).resolve()) if Path(tok_path).is_dir() else tok_path,
        tokenizer_len=tok_len, model_vocab_size=vocab, needs_resize=num_rows > vocab, num_base_rows=base_rows,
        pad_vocab_to_multiple_of=cfg.model.pad_vocab_to_multiple_of, new_rows_init=cfg.model.new_rows_init,
        gradient_checkpointing=cfg.model.checkpointing_on(), special_ids=specials, lora=lora,
        new_rows=new_rows, num_rows=num_rows,
    )


def _plan_lora(cfg: TrainConfig, model_type: str):
    """The LoRA plan (its new rows are known once the model is resized, in build_model)."""
    from kopretrain.train.adapters import LoraPlan, lora_targets

    p = cfg.peft
    if not p.train_new_rows and any(s.trainable == "new_embeddings" for s in cfg.resolved_stages()):
        raise UserError("peft.train_new_rows: a new_embeddings stage with LoRA trains the new rows; set it to true")
    return LoraPlan(r=p.r, alpha=p.alpha, dropout=p.dropout, target_modules=lora_targets(model_type, p.target_modules),
                    train_new_rows=p.train_new_rows, export=p.export)


def build_model(plan: ModelPlan, seed: int):
    """The fp32 model on CPU, identical on every worker; returns (model, info)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    info: dict = {}
    if plan.name_or_path:
        model = AutoModelForCausalLM.from_pretrained(plan.name_or_path, dtype=torch.float32)
    else:
        config = arch_config(plan.arch, plan.model_vocab_size, plan.special_ids)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if plan.new_rows is not None:  # before any sharding: the strategies see the final matrices
        from kopretrain.tokenizer.embeddings import init_rows

        info["resize"] = init_rows(model, plan.new_rows, plan.new_rows_init)
        model.config.vocab_size = info["resize"]["num_rows"]
    if plan.gradient_checkpointing:  # non-reentrant torch.utils.checkpoint around each decoder layer's forward
        model.activation_checkpointing_enable()
    model.train()  # from_pretrained returns eval mode, where HF skips checkpointing (and dropout)
    model.config.use_cache = False
    info["num_params"] = sum(p.numel() for p in model.parameters())
    info["vocab_size"] = model.get_input_embeddings().weight.shape[0]
    if plan.lora is not None:  # before any sharding, like the resize; in place: train/model_init_lora.py
        from kopretrain.train.adapters import apply_lora, count_trainable, init_lora_weights, with_new_rows

        plan.lora = with_new_rows(plan.lora, plan.num_base_rows, info["vocab_size"])
        model = apply_lora(model, plan.lora)
        init_lora_weights(model, seed)  # seeded explicitly: the in-place path draws the same adapters
        info["num_trainable_params"] = count_trainable(model)
    return model, info


def export_model(state_dict: dict, plan: ModelPlan, model_config, out_dir: Path) -> Path:
    """Write the full (unsharded) weights as an HF model directory, with the tokenizer beside it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config, dtype=torch.float32)
    # fp32 whatever the strategy held (DeepSpeed bf16 keeps bf16 module weights)
    model.load_state_dict({k: v.float() for k, v in state_dict.items()}, assign=True, strict=False)
    model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    assert not missing, f"export is missing weights: {missing[:5]}"
    model.config.use_cache = True
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(plan.tokenizer_dir).save_pretrained(out_dir)
    return out_dir


def compile_layers(model) -> int:
    """`torch.compile` every decoder layer (the classes in `_no_split_modules`) in place; returns how many.

    `Module.compile()` keeps the module, its parameter names and its hooks: checkpoints, the
    export and the strategies' wrapping see the same model. Compilation happens at the first
    forward (inductor; on CPU it needs a C++ compiler).
    """
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    for layer in layers:
        layer.compile()
    return len(layers)
