"""Reduced precision: which autocast dtype a device computes fast.

- CUDA: float16 (with a gradient scaler when training). It runs on every CUDA card, old ones (K80
  class) included; bfloat16 would need a recent architecture.
- CPU: bfloat16 where the processor computes it natively (the AVX512-BF16 or AMX-BF16 flags, with
  oneDNN available), which roughly halves a ResNet-18 training step on such a CPU; elsewhere bf16
  would be emulated and slower, so the CPU stays in float32.

Example:
    >>> model, x = torch.nn.Linear(8, 2), torch.randn(4, 8)
    >>> dtype = autocast_dtype(torch.device("cpu"))  # bfloat16 or None
    >>> with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
    ...     y = model(x)
    >>> y.shape
    torch.Size([4, 2])
"""

from __future__ import annotations

from pathlib import Path

import torch

_NATIVE_BF16: bool | None = None


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16 flags; Linux only)."""
    global _NATIVE_BF16
    if _NATIVE_BF16 is None:
        try:
            flags = Path("/proc/cpuinfo").read_text()
            _NATIVE_BF16 = (" avx512_bf16" in flags or " amx_bf16" in flags) and \
                torch.backends.mkldnn.is_available()
        except OSError:
            _NATIVE_BF16 = False
    return bool(_NATIVE_BF16)


def autocast_dtype(device: str | torch.device) -> torch.dtype | None:
    """The reduced-precision dtype worth autocasting to on ``device`` (``None``: stay in float32)."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.float16
    if kind == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


__all__ = ["autocast_dtype", "cpu_has_native_bf16"]
