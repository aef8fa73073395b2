#!/usr/bin/env python
"""Speed of the surrogate against the exact labeller, per image, on the same machine in one run.

For N images from --data brought to --image-size (fit_square), it times:

- the exact labeller (saliencyssl.saliency.Labeller, default parameters) on each image, one by
  one, as scripts/label.py runs it (after one warm-up image);
- the surrogate's batched predict() (uint8 images in, TargetBatch out: network plus the
  connected-component labelling of the predicted boundaries), its network alone
  (predict_channels) and its regions alone (TargetBatch.from_channels on the network's output:
  saliencyssl.target.label_components and the renumbering; OpenCV on the CPU, the log-depth
  torch labelling on CUDA), after a warm-up batch, the median of --repeats passes over the N images;
  and the network's floating-point operations per image (torch's FLOP counter), so its time reads
  as a rate of the machine.

The speed-up divides the labeller's median per image by the surrogate's; both run on --threads
threads (torch for the surrogate, OpenCV for the labeller; default 1, as one labelling worker).

The surrogate is a freshly initialised one of the default architecture (Surrogate.fresh), since
its weights do not change its network's cost (--ngf gives it another width), or --surrogate PATH.
A fresh network's boundaries are noise, so time the regions on a trained one. On CUDA it also
reports images per second at 32 and 96 px (--gpu-sizes), fp16 autocast as in training and the router: the loaded
surrogate at its own size, a fresh one of the same widths at the others ("fresh" in the JSON),
for predict, the network alone and the regions alone.

Examples:
  python benchmarks/bench_surrogate.py --data ../shared/data/cifar10/test --num-images 512 \\
      --json runs/bench_surrogate_cpu.json
  python benchmarks/bench_surrogate.py --data ../shared/data/bsds500_test/images --image-size 96 --num-images 128
  python benchmarks/bench_surrogate.py --data ../shared/data/cifar10/test --device cuda --batch-size 512 \\
      --json runs/bench_surrogate_gpu.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_common import cpu_name, device_name, emit, sync  # noqa: E402


def time_surrogate(surrogate, images: torch.Tensor, batch_size: int, repeats: int, full: bool) -> float:
    """Seconds per image for predict (``full``) or predict_channels: the median of ``repeats`` passes."""
    device = surrogate.device
    images = images.to(device)
    fn = surrogate.predict if full else surrogate.predict_channels
    fn(images[:batch_size])  # warm-up (allocations, kernel selection)
    sync(device)
    passes = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(images), batch_size):
            fn(images[i:i + batch_size])
        sync(device)
        passes.append(time.perf_counter() - start)
    return float(np.median(passes)) / len(images)


def time_regions(surrogate, images: torch.Tensor, batch_size: int, repeats: int) -> float:
    """Seconds per image of the regions part of predict: ``TargetBatch.from_channels`` on the network's
    output, computed once beforehand (a warm-up batch first, then the median of ``repeats`` passes)."""
    from saliencyssl.target import TargetBatch

    device = surrogate.device
    channels = [surrogate.predict_channels(images[i:i + batch_size].to(device))
                for i in range(0, len(images), batch_size)]
    TargetBatch.from_channels(channels[0])  # warm-up
    sync(device)
    passes = []
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in channels:
            TargetBatch.from_channels(batch)
        sync(device)
        passes.append(time.perf_counter() - start)
    return float(np.median(passes)) / len(images)


def network_flops(surrogate) -> float:
    """Floating-point operations of the surrogate's network on one image (torch's FLOP counter: two per
    multiply-add of the convolutions), counted on a copy of its architecture on torch's meta device: shapes
    only, no memory and no arithmetic, so counting costs nothing whatever the device the timing ran on."""
    from torch.utils.flop_counter import FlopCounterMode

    from saliencyssl.surrogate.networks import UNetGenerator

    size = surrogate.image_size
    with torch.device("meta"):
        generator = UNetGenerator(surrogate.arch).eval()
        image = torch.zeros(1, 3, size, size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        generator(image)
    return float(counter.get_total_flops())


def time_labeller(images: np.ndarray) -> tuple[float, list[float]]:
    """Median seconds per image of the exact labeller (one warm-up image first)."""
    from saliencyssl.saliency import Labeller

    labeller = Labeller()
    labeller(images[0])
    times = []
    for image in images:
        start = time.perf_counter()
        labeller(image)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), times


def compare_with_labeller(result: dict, args, images, pixels, device, full: float, net: float) -> None:
    """Time the exact labeller on ``pixels`` and add the speed-ups of the surrogate to ``result``."""
    n_label = len(pixels)
    label_median, label_times = time_labeller(pixels)
    result["labeller_images"] = n_label
    result["labeller_ms_per_image"] = label_median * 1e3
    result["labeller_ms_per_image_mean"] = float(np.mean(label_times)) * 1e3
    print(f"exact labeller on {cpu_name()}: {label_median * 1e3:.2f} ms/image (median of {n_label}; mean "
          f"{np.mean(label_times) * 1e3:.2f})", flush=True)
    if device.type == "cpu":
        result["speedup"] = label_median / full
        result["speedup_network_only"] = label_median / net
        print(f"speed-up on the same CPU: {result['speedup']:.1f}x (network alone {result['speedup_network_only']:.1f}x)")
        if "surrogate_float32_ms_per_image" in result:
            result["speedup_float32"] = label_median / (result["surrogate_float32_ms_per_image"] / 1e3)
            print(f"  in float32: {result['speedup_float32']:.1f}x")
    else:
        # The same comparison on the CPU of this machine, so the speed-up is like for like.
        from saliencyssl.surrogate.model import Surrogate

        cpu_surrogate = Surrogate.fresh(args.image_size, device="cpu") if not args.surrogate else \
            Surrogate.load(args.surrogate, device="cpu")
        cpu_full = time_surrogate(cpu_surrogate, images, args.batch_size, 1, full=True)
        result["surrogate_cpu_ms_per_image"] = cpu_full * 1e3
        result["speedup_cpu"] = label_median / cpu_full
        result["speedup_gpu_vs_labeller_cpu"] = label_median / full
        print(f"surrogate on this CPU: {cpu_full * 1e3:.4f} ms/image -> {result['speedup_cpu']:.1f}x; GPU vs one CPU "
              f"labeller: {result['speedup_gpu_vs_labeller_cpu']:.0f}x")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, metavar="DIR", help="image folder (or CIFAR batches)")
    p.add_argument("--image-size", type=int, default=32, metavar="S", help="side of the images (default 32)")
    p.add_argument("--batch-size", type=int, default=128, metavar="B", help="surrogate batch (default 128)")
    p.add_argument("--num-images", type=int, default=512, metavar="N", help="images timed (default 512)")
    p.add_argument("--labeller-images", type=int, default=None, metavar="N",
                   help="images the exact labeller is timed on (default: min(N, 200); 0: do not time it, "
                        "e.g. on a machine without numba)")
    p.add_argument("--device", default="cpu", help="surrogate device: cpu or cuda (default %(default)s)")
    p.add_argument("--surrogate", type=Path, default=None, metavar="PATH",
                   help="time this surrogate.pt instead of a fresh default one (same cost for the same arch)")
    p.add_argument("--ngf", type=int, default=None, metavar="N",
                   help="the fresh surrogate's generator width (default: the default architecture's; not with "
                        "--surrogate)")
    p.add_argument("--repeats", type=int, default=3, help="passes over the images, median kept (default 3)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch and OpenCV CPU threads (default 1: one core, as one labeller worker uses; 0 = their "
                        "own choice)")
    p.add_argument("--gpu-sizes", default="32,96", metavar="S,S",
                   help="on CUDA, also images/s at these sizes (default %(default)s)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the figures as JSON")
    args = p.parse_args(argv)
    if args.ngf is not None and args.surrogate:
        p.error("--ngf sets the width of a fresh surrogate; a loaded one has its own")

    from saliencyssl.datasets import fit_square, open_image_set
    from saliencyssl.surrogate.model import Surrogate

    if args.threads > 0:
        import cv2

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    device = torch.device(args.device)
    image_set = open_image_set(args.data)
    n = min(args.num_images, len(image_set))
    step = max(1, len(image_set) // n)
    chosen = list(range(0, len(image_set), step))[:n]
    pixels = np.stack([fit_square(image_set.image(i), args.image_size) for i in chosen])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()

    if args.surrogate:
        surrogate = Surrogate.load(args.surrogate, device=device, expect_image_size=args.image_size)
    else:
        surrogate = Surrogate.fresh(args.image_size, device=device,
                                    **({"ngf": args.ngf} if args.ngf is not None else {}))
    result = {
        "date": time.strftime("%Y-%m-%d"), "device": str(device), "device_name": device_name(device),
        "cpu": cpu_name(), "cores": os.cpu_count(),
        "torch": str(torch.__version__), "threads": torch.get_num_threads(), "image_size": args.image_size,
        "batch_size": args.batch_size, "num_images": n,
        "surrogate": str(args.surrogate or ("fresh default" if args.ngf is None else f"fresh, ngf {args.ngf}")),
        "arch": surrogate.arch.as_dict(),
        "autocast": str(surrogate.autocast_dtype).replace("torch.", "") if surrogate.autocast_dtype else "float32",
    }
    load_before = os.getloadavg()
    full = time_surrogate(surrogate, images, args.batch_size, args.repeats, full=True)
    net = time_surrogate(surrogate, images, args.batch_size, args.repeats, full=False)
    regions = time_regions(surrogate, images, args.batch_size, args.repeats)
    result["surrogate_ms_per_image"] = full * 1e3
    result["surrogate_network_ms_per_image"] = net * 1e3
    result["surrogate_regions_ms_per_image"] = regions * 1e3
    result["surrogate_images_per_second"] = 1.0 / full
    flops = network_flops(surrogate)
    result["network_mflop_per_image"] = flops / 1e6
    result["network_gflop_per_second"] = flops / net / 1e9
    print(f"surrogate on {result['device_name']}: {full * 1e3:.4f} ms/image predict (network alone "
          f"{net * 1e3:.4f} ms, regions alone {regions * 1e3:.4f} ms), batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, autocast {result['autocast']}", flush=True)
    print(f"  the network: {flops / 1e6:.1f} MFLOP per image, run at {result['network_gflop_per_second']:.1f} "
          f"GFLOP/s", flush=True)
    if surrogate.autocast_dtype is not None:
        surrogate.amp = False
        fp32 = time_surrogate(surrogate, images, args.batch_size, args.repeats, full=True)
        surrogate.amp = True
        result["surrogate_float32_ms_per_image"] = fp32 * 1e3
        print(f"  in float32: {fp32 * 1e3:.4f} ms/image predict", flush=True)

    # one-minute load averages around the surrogate's timing: whether other work shared the machine
    result["load_average_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    n_label = min(n, 200 if args.labeller_images is None else args.labeller_images)
    if n_label > 0:
        compare_with_labeller(result, args, images, pixels[:n_label], device, full, net)
    else:
        print("exact labeller not timed (--labeller-images 0): no speed-up reported", flush=True)
    if device.type == "cuda" and args.gpu_sizes:
        rates = {}
        for size in (int(s) for s in args.gpu_sizes.split(",") if s):
            sized = torch.from_numpy(np.stack([fit_square(image_set.image(i), size) for i in chosen]))
            sized = sized.permute(0, 3, 1, 2).contiguous()
            reps = max(1, 4096 // len(sized))
            sized = sized.repeat(reps, 1, 1, 1)
            fresh = size != surrogate.image_size
            widths = {k: v for k, v in surrogate.arch.as_dict().items() if k in ("ngf", "ndf", "max_mult")}
            s = Surrogate.fresh(size, device=device, **widths) if fresh else surrogate
            per = time_surrogate(s, sized, args.batch_size, args.repeats, full=True)
            per_net = time_surrogate(s, sized, args.batch_size, args.repeats, full=False)
            per_regions = time_regions(s, sized, args.batch_size, args.repeats)
            rates[str(size)] = {"images_per_second": 1.0 / per, "network_images_per_second": 1.0 / per_net,
                                "regions_images_per_second": 1.0 / per_regions,
                                "regions_over_network": per_regions / per_net,
                                "images": len(sized), "fresh": fresh, "ngf": s.arch.ngf}
            print(f"GPU {size}px ({'a fresh' if fresh else 'this'} ngf-{s.arch.ngf} generator): {1.0 / per:,.0f} "
                  f"images/s predict, {1.0 / per_net:,.0f} images/s network alone, {1.0 / per_regions:,.0f} "
                  f"images/s regions alone ({per_regions / per_net:.2f}x the network's time)")
        result["gpu_images_per_second"] = rates
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
