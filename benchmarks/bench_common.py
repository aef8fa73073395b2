"""What every benchmark script records: the machine it ran on, and its result as JSON.

Imported by the ``bench_*.py`` scripts next to it (run as ``python benchmarks/bench_x.py``, so
this folder is on ``sys.path``).
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str | torch.device) -> str:
    """The GPU's name for a CUDA device; for the CPU its model and torch's thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_name()}, {torch.get_num_threads()} threads)"


def emit(result: dict, json_path: Path | None) -> None:
    """Print the result as JSON and, when asked, write it to ``json_path`` (parents created)."""
    text = json.dumps(result, indent=2)
    print(text)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text)
