"""Parameter counts from a Hugging Face config dict (no torch): what `AutoModelForCausalLM.from_config`
would build, counted the way `model.parameters()` does (a tied lm_head once).

Families: llama, mistral, qwen2, gemma (RMSNorm, gated MLP, grouped-query attention, optional
biases) and gpt_neox (Polyglot-Ko: LayerNorm with bias, fused QKV, 4h GELU MLP, biases). The counts
are checked against transformers' models built on the meta device in tests/plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kopretrain.errors import UserError

LLAMA_LIKE = ("llama", "mistral", "qwen2", "gemma")
FAMILIES = LLAMA_LIKE + ("gpt_neox",)
# transformers' own default of tie_word_embeddings per family, when config.json does not say
TIED_BY_DEFAULT = {"llama": False, "mistral": False, "qwen2": False, "gemma": True, "gpt_neox": False}


@dataclass(frozen=True)
class ModelSize:
    """The shape and parameter counts of a causal LM."""

    model_type: str
    hidden: int
    intermediate: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tied: bool
    gated_mlp: bool
    embedding_params: int  # the input embedding table
    lm_head_params: int  # 0 when tied to the input embedding
    layer_params: int  # one decoder layer
    final_norm_params: int
    linears: dict[str, tuple[int, int]] = field(default_factory=dict)  # per layer: module name -> (in, out)
    """One decoder layer's linear modules (LoRA targets): name -> (in_features, out_features)."""
    linear_biases: dict[str, int] = field(default_factory=dict)

    @property
    def total_params(self) -> int:
        """All parameters, a tied matrix once (= sum(p.numel() for p in model.parameters()))."""
        return self.embedding_params + self.lm_head_params + self.num_layers * self.layer_params + self.final_norm_params

    @property
    def non_embedding_params(self) -> int:
        """Parameters less the input embedding and lm_head (Kaplan et al.'s N)."""
        return self.total_params - self.embedding_params - self.lm_head_params

    @property
    def largest_module_params(self) -> int:
        """The largest single module's own parameters (DeepSpeed's `largest_layer_params`)."""
        linear = max(i * o + self.linear_biases.get(n, 0) for n, (i, o) in self.linears.items())
        return max(self.embedding_params, linear)

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim


def _get(config: dict, key: str, default=None) -> int:
    """A size field of the config: a positive integer (0, as some configs write 'unset', sizes nothing)."""
    value = config.get(key, default)
    if value is None:
        raise UserError(f"base_model: the config has no {key!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
        raise UserError(f"base_model: the config's {key!r} is {value!r}; it must be a positive integer")
    return int(value)


def model_size(config: dict, vocab_size: int = 0) -> ModelSize:
    """ModelSize of an HF config dict; `vocab_size` > 0 replaces the config's (after vocabulary expansion)."""
    kind = config.get("model_type", "")
    if kind not in FAMILIES:
        raise UserError(f"base_model: model_type {kind!r} is not one plan can size ({', '.join(FAMILIES)})")
    h = int(_get(config, "hidden_size"))
    heads = int(_get(config, "num_attention_heads"))
    layers = int(_get(config, "num_hidden_layers"))
    inter = int(_get(config, "intermediate_size", 4 * h))
    vocab = int(vocab_size or _get(config, "vocab_size"))
    tied = bool(config.get("tie_word_embeddings", TIED_BY_DEFAULT[kind]))
    if kind == "gpt_neox":
        kv, hd = heads, h // heads
        bias = bool(config.get("attention_bias", True))
        linears = {"query_key_value": (h, 3 * h), "dense": (h, h), "dense_h_to_4h": (h, inter), "dense_4h_to_h": (inter, h)}
        biases = {n: o for n, (i, o) in linears.items()} if bias else {}
        if not bias:  # transformers' GPT-NeoX: attention_bias covers the attention; the MLP always has biases
            biases = {"dense_h_to_4h": inter, "dense_4h_to_h": h}
        norms, final_norm, gated = 4 * h, 2 * h, False  # two LayerNorms (weight + bias) per layer
    else:
        kv = _get(config, "num_key_value_heads") if config.get("num_key_value_heads") else heads  # 0/null: unset
        hd = _get(config, "head_dim") if config.get("head_dim") else h // heads
        linears = {"q_proj": (h, heads * hd), "k_proj": (h, kv * hd), "v_proj": (h, kv * hd), "o_proj": (heads * hd, h),
                   "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}
        biases = {}
        if kind == "qwen2" or config.get("attention_bias", False):
            biases.update({n: linears[n][1] for n in ("q_proj", "k_proj", "v_proj")})
            if kind != "qwen2":
                biases["o_proj"] = h
        if config.get("mlp_bias", False):
            biases.update({n: linears[n][1] for n in ("gate_proj", "up_proj", "down_proj")})
        norms, final_norm, gated = 2 * h, h, True  # two RMSNorm weights per layer
    layer = sum(i * o for i, o in linears.values()) + sum(biases.values()) + norms
    return ModelSize(model_type=kind, hidden=h, intermediate=inter, num_layers=layers, num_heads=heads,
                     num_kv_heads=kv, head_dim=hd, vocab_size=vocab, tied=tied, gated_mlp=gated,
                     embedding_params=vocab * h, lm_head_params=0 if tied else vocab * h, layer_params=layer,
                     final_norm_params=final_norm, linears=linears, linear_biases=biases)
