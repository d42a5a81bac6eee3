"""Schema of `kopretrain plan` (conf/plan.yaml): memory, time and cost of a run, before renting a GPU.

Torch-free; the tables it checks against are in `kopretrain.plan` (pure).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kopretrain.config.common import require, require_choice
from kopretrain.paths import resolve_path
from kopretrain.plan.hardware import GPUS
from kopretrain.plan.memory import ATTENTION, STRATEGIES
from kopretrain.plan.shapes import KNOWN_SHAPES

DEFAULT_MFU = 0.4
"""The MFU assumed when neither `mfu` nor a measured `from_report` gives one."""


@dataclass
class PlanConfig:
    """Memory per GPU, wall time, GPU-hours and cost of a continual-pretraining run, per strategy."""

    base_model: str = "Llama-2-7B"
    """A known shape (Llama-2-7B, Llama-2-13B, SOLAR-10.7B, Yi-6B, Mistral-7B, Gemma-2B, Gemma-7B, Polyglot-Ko-1.3B/5.8B/12.8B, Qwen2-7B, Llama-3-8B) or an HF model/config directory."""
    vocab_size: int = 0
    """Vocabulary after expansion (0 = the model's); rows beyond the model's are the new rows."""
    num_tokens: float = 15e9
    """Tokens the run trains on (e.g. 15e9)."""
    seq_len: int = 4096
    """Tokens per sequence."""
    micro_batch_size: int = 1
    """Sequences per forward/backward on one GPU."""
    activation_checkpointing: bool = False
    """Recompute each decoder layer in backward (train's model.gradient_checkpointing)."""
    attention: str = "sdpa"
    """sdpa or flash (no [seq, seq] matrix kept), or eager (Korthikanti's 5as^2b per layer)."""
    gpu: str = "H100-80GB"
    """GPU type: A100-40GB, A100-80GB, H100-80GB, H200-141GB, L40S, L4."""
    num_gpus: int = 2
    """GPUs in the run (the data-parallel world size)."""
    gpus_per_node: int = 0
    """GPUs per node (0 = num_gpus up to 8 on one node, else 8); num_gpus must be a multiple of it."""
    gpu_memory_gib: float = 0.0
    """Memory of one GPU in GiB (0 = the gpu type's)."""
    peak_tflops: float = 0.0
    """Peak dense bf16 TFLOPS of one GPU (0 = the gpu type's)."""
    usable_memory_fraction: float = 0.9
    """Share of GPU memory a run can fill (the rest: CUDA context, NCCL buffers, fragmentation)."""
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    """Strategies to compare side by side (ddp, fsdp, deepspeed_zero2/3, deepspeed_zero2/3_offload, lora)."""
    mfu: float = 0.0
    """Model FLOPs utilisation to assume (0 = from_report's measured MFU, else DEFAULT_MFU = 0.4)."""
    price_per_gpu_hour: float = 0.0
    """Price of one GPU-hour (any currency; 0 = no cost column)."""
    from_report: str = ""
    """A `train` run's report.json (or its run directory): its measured MFU and tokens/s project the run."""
    lora_rank: int = 16
    """LoRA rank r (the lora column)."""
    lora_targets: list[str] = field(default_factory=list)
    """LoRA target modules of each decoder layer ([] = all its linears, e.g. q_proj ... down_proj)."""
    lora_train_new_rows: bool = True
    """LoRA also trains the new embedding (and untied lm_head) rows of an expanded vocabulary."""

    def __post_init__(self):
        require(self.base_model in KNOWN_SHAPES or resolve_path(self.base_model).exists(), "base_model",
                f"{self.base_model!r} is neither a known shape ({', '.join(KNOWN_SHAPES)}) nor an HF model directory")
        require(self.vocab_size >= 0, "vocab_size", "must be >= 0")
        require(self.num_tokens > 0, "num_tokens", "must be > 0")
        require(self.seq_len >= 1, "seq_len", "must be >= 1")
        require(self.micro_batch_size >= 1, "micro_batch_size", "must be >= 1")
        require_choice(self.attention, ATTENTION, "attention")
        require_choice(self.gpu, GPUS, "gpu")
        require(self.num_gpus >= 1, "num_gpus", "must be >= 1")
        require(self.gpus_per_node >= 0, "gpus_per_node", "must be >= 0")
        require(self.num_gpus % self.nodes_size == 0, "num_gpus",
                f"{self.num_gpus} is not a multiple of gpus_per_node ({self.nodes_size})")
        require(self.gpu_memory_gib >= 0, "gpu_memory_gib", "must be >= 0")
        require(self.peak_tflops >= 0, "peak_tflops", "must be >= 0")
        require(0 < self.usable_memory_fraction <= 1, "usable_memory_fraction", "must be in (0, 1]")
        require(bool(self.strategies), "strategies", "give at least one strategy")
        for name in self.strategies:
            require_choice(name, STRATEGIES, "strategies")
        require(0 <= self.mfu <= 1, "mfu", f"must be in [0, 1] (got {self.mfu})")
        require(self.price_per_gpu_hour >= 0, "price_per_gpu_hour", "must be >= 0")
        require(self.lora_rank >= 1, "lora_rank", "must be >= 1")

    @property
    def nodes_size(self) -> int:
        """GPUs per node, resolved (gpus_per_node, or num_gpus up to 8)."""
        return self.gpus_per_node or min(self.num_gpus, 8)
