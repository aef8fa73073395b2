"""What every benchmark script records: the machine it ran on, and its result as JSON.

Imported by the ``bench_*.py`` scripts next to it (run as ``python benchmarks/bench_x.py``, so
this folder is on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch


def sync(device: str | torch.device) -> None:
    """Wait for a CUDA device's queued work, so that a clock read after it is honest (no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    """Print the result as JSON and, when asked, write it to ``json_path`` (parents created). The day, the CPU's
    model and its core count are added where the script did not record them, so every result file says when and
    where it was measured."""
    result.setdefault("date", time.strftime("%Y-%m-%d"))
    if "machine" not in result:
        result.setdefault("cpu", cpu_name())
    result.setdefault("cores", os.cpu_count())
    text = json.dumps(result, indent=2)
    print(text)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text)


def label_missing(cache, image_set, image_size: int, labeller) -> int:
    """Label into ``cache`` the images of ``image_set`` it lacks, keyed as pretraining at ``image_size`` looks
    them up; returns how many were labelled (with a progress bar when there are any)."""
    from saliencyssl.augment import TrainingImages

    hashes = TrainingImages(image_set, image_size).hashes
    todo = [i for i, h in enumerate(hashes) if h not in cache]
    if todo:
        from tqdm import tqdm

        print(f"labelling {len(todo)} images into the cache ...", flush=True)
        for i in tqdm(todo, unit="img"):
            cache.put(hashes[i], labeller(image_set.image(i)))
    return len(todo)


def saliency_policy(parser, name: str):
    """``--policy`` parsed, or a usage error from ``parser`` when it renders no saliency view (there would be
    nothing to compare)."""
    from saliencyssl.augment import parse_policy

    policy = parse_policy(name)
    if not policy.uses_saliency:
        parser.error(f"--policy {name!r} must use the saliency view (e.g. sal+default) to compare anything")
    return policy


def labelling_rate(images_dir: Path, files: list[Path], executor) -> float:
    """Images per second that ``executor``'s workers label ``files`` into an empty cache, closing it after.

    Every worker first labels an image untimed (four tasks a worker), so process start-up, imports and
    numba's compilation (about 0.7 s a process) stay out of the clock, as in a long labelling job.
    """
    import tempfile
    import time

    from saliencyssl.cache import TargetCache
    from saliencyssl.cache.labelling import label_files, label_folder
    from saliencyssl.saliency import LabellerConfig

    config = LabellerConfig()
    warm = [(config.options(), [(str(Path(files[0]).resolve()), True, False)])] * (4 * max(1, executor.workers))
    with executor, tempfile.TemporaryDirectory() as tmp, TargetCache(tmp, config.fingerprint()) as cache:
        list(executor.imap_unordered(label_files, warm))
        start = time.perf_counter()
        summary = label_folder(images_dir, cache, config, executor=executor, paths=files, progress=False,
                               chunk_size=1)
        seconds = time.perf_counter() - start
    return summary.labelled / seconds
