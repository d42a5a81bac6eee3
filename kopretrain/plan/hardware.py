"""GPU types: peak dense bf16 TFLOPS and memory. Torch-free; `config/train.py` imports it for MFU.

Peaks are the vendors' dense (no sparsity) bf16 tensor-core figures: A100 312 (A100 datasheet),
H100 SXM 989 and H200 989 (H100/H200 datasheets; H200 is the H100 compute with more memory),
L40S 362 (Ada datasheet, 733 with sparsity), L4 121 (242 with sparsity). Memory is what
`nvidia-smi` reports as total (MiB), which is what a process can at most allocate.
"""

from __future__ import annotations

from dataclasses import dataclass

# Peak dense bf16 TFLOPS per GPU by Ray accelerator type, for MFU when scale.peak_tflops_per_gpu is 0.
PEAK_TFLOPS_BF16 = {"A100": 312.0, "H100": 989.0, "H200": 989.0, "L40S": 362.0, "L4": 121.0}

MIB = 1024**2
GIB = 1024**3


@dataclass(frozen=True)
class GPU:
    """One GPU type as `kopretrain plan gpu=...` knows it."""

    name: str
    accelerator_type: str  # Ray's accelerator type, the key of PEAK_TFLOPS_BF16
    memory_mib: int  # total memory as nvidia-smi reports it

    @property
    def peak_tflops(self) -> float:
        return PEAK_TFLOPS_BF16[self.accelerator_type]

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB


GPUS: dict[str, GPU] = {g.name: g for g in [
    GPU("A100-40GB", "A100", 40960),
    GPU("A100-80GB", "A100", 81920),
    GPU("H100-80GB", "H100", 81559),
    GPU("H200-141GB", "H200", 143771),
    GPU("L40S", "L40S", 46068),
    GPU("L4", "L4", 23034),
]}
"""`gpu=` name -> GPU (peak from PEAK_TFLOPS_BF16, memory in MiB)."""
