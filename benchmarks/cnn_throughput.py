"""Training and inference images/s of a CPM, end to end, against a plain baseline.

Optimised path: exactly what `pm train --backend cnn` runs (training.cnn.BatchMaker and
train_step): crops decoded once and kept on the device, per-sample scale/rotation/flip warped
there in batches, targets rendered there, pinned asynchronous copies and no host
synchronisation inside a step, bf16 autocast + channels_last + torch.compile + fused AdamW on
CUDA. Baseline: the same network in plain fp32 eager mode, fed by a naive loader that warps
each crop on the CPU with PIL and renders targets with numpy.

Every figure is printed (and flushed) as soon as it is measured; each phase is bounded by
``--steps`` and ``--max-seconds``, so a slow phase can never hide the others.

    python benchmarks/cnn_throughput.py --device cuda --config cpm-paper --batch 32
    python benchmarks/cnn_throughput.py --device cuda --config cpm-gpu --batch 128 --no-baseline
    python benchmarks/cnn_throughput.py --device cpu --config cpm-small --batch 16
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from posemachines.backends.cnn.batches import BatchMaker, crop_matrices
from posemachines.backends.cnn.config import CONFIGS
from posemachines.backends.cnn.network import CPM, ColourConv
from posemachines.backends.cnn.steps import stage_losses, synchronize, train_step
from posemachines.core.crops import Augmentation, apply_affine, warp_image
from posemachines.data import load_dataset
from posemachines.data.pack import pack_crops
from posemachines.devices import autocast, training_environment


def report(name: str, value, **extra) -> None:
    print(json.dumps({"figure": name, "value": value, **extra}), flush=True)


def timed(run, device, steps: int, max_seconds: float, warmup: int) -> tuple[float, int]:
    """Median seconds per step over up to 3 repeats of ``steps`` steps (after ``warmup`` steps,
    which hold the compilation), stopping early once ``max_seconds`` of timed steps have gone;
    returns (seconds per step, steps timed)."""
    for k in range(warmup):
        run(k)
    synchronize(device)
    start = time.perf_counter()
    per_step, k = [], warmup
    while len(per_step) < 3:
        t = time.perf_counter()
        n = 0
        for _ in range(steps):
            run(k)
            k += 1
            n += 1
            if time.perf_counter() - start > max_seconds:
                break
        synchronize(device)
        per_step.append((time.perf_counter() - t) / n)
        if time.perf_counter() - start > max_seconds:
            break
    return float(np.median(per_step)), k - warmup


def optimised(module, crops, codec, device, batch, args, train: bool, mode: str | None):
    """img/s of the path `pm train` uses (train) or of warp + forward (inference)."""
    precision = autocast(device)
    runner = torch.compile(module, mode=None if mode == "default" else mode) if mode else module
    images = torch.as_tensor(crops.images, device=device)
    perm = list(range(crops.joints.shape[1]))
    maker = BatchMaker(crops, images, codec, Augmentation(), perm, 0, batch)
    fused = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.AdamW(module.parameters(), lr=1e-5, **fused)
    module.train(train)

    def run(k):
        inputs, targets, weights = maker(k % maker.steps_per_epoch)
        if train:
            train_step(runner, opt, inputs, targets, weights, precision)
        else:
            with torch.no_grad(), precision:
                runner(*inputs)

    s, n = timed(run, device, args.steps, args.max_seconds, warmup=3)
    return batch / s, n


def baseline(module, crops, codec, device, batch, args, train: bool):
    """fp32 eager, crops warped one by one on the CPU (PIL) and targets rendered with numpy."""
    aug = Augmentation()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-5)
    rng = np.random.default_rng(0)
    module.train(train)

    def run(k):
        idx = rng.integers(0, len(crops), batch)
        mats, _ = crop_matrices(crops, codec.input_size, idx, aug if train else None, rng)
        imgs = np.stack(
            [warp_image(crops.images[i], m, codec.input_size) for i, m in zip(idx, mats)]
        )
        x = torch.as_tensor(imgs, device=device).permute(0, 3, 1, 2).float() / 255 - 0.5
        if train:
            maps, weights = codec.encode(apply_affine(mats, crops.joints[idx]), crops.labelled[idx])
            out = module(x)
            loss = stage_losses(
                out, torch.as_tensor(maps, device=device), torch.as_tensor(weights, device=device)
            ).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
        else:
            with torch.no_grad():
                module(x)[-1].sum().item()

    s, n = timed(run, device, args.steps, args.max_seconds, warmup=1)
    return batch / s, n


def profile(module, crops, codec, device, batch, rows: int = 20) -> None:
    """Where a training step's device time goes (eager bf16), the top kernels."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    precision = autocast(device)
    images = torch.as_tensor(crops.images, device=device)
    perm = list(range(crops.joints.shape[1]))
    maker = BatchMaker(crops, images, codec, Augmentation(), perm, 0, batch)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-5, fused=device.type == "cuda")
    for k in range(3):
        train_step(module, opt, *maker(k), precision)
    synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for k in range(3):
            train_step(module, opt, *maker(k), precision)
        synchronize(device)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows), flush=True)


def sweep(cfg, crops, codec, device, batch, args) -> None:
    """Eager training img/s for each memory format x dtype x cuDNN search (leads for speed)."""
    import itertools

    limit_before = torch.backends.cudnn.benchmark_limit
    for fmt, dtype, limit in itertools.product(
        (torch.channels_last, torch.contiguous_format), (torch.bfloat16, torch.float16), (10, 0)
    ):
        torch.backends.cudnn.benchmark_limit = limit
        module = CPM(cfg).to(device).to(memory_format=fmt)
        images = torch.as_tensor(crops.images, device=device)
        perm = list(range(crops.joints.shape[1]))
        maker = BatchMaker(crops, images, codec, Augmentation(), perm, 0, batch)
        opt = torch.optim.AdamW(module.parameters(), lr=1e-5, fused=True)
        precision = torch.autocast("cuda", dtype)

        def run(k, module=module, maker=maker, opt=opt, precision=precision, fmt=fmt):
            (x,), targets, weights = maker(k % maker.steps_per_epoch)
            x = x.contiguous(memory_format=fmt)
            train_step(module, opt, (x,), targets, weights, precision)

        s, n = timed(run, device, args.steps, args.max_seconds, warmup=3)
        name = "nhwc" if fmt == torch.channels_last else "nchw"
        report(
            f"train_img_s[eager, {name}, {str(dtype)[6:]}, cudnn limit {limit or 'all'}]",
            round(batch / s, 1),
            steps=n,
        )
    torch.backends.cudnn.benchmark_limit = limit_before


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--config", default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed repeat")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="bound on every phase")
    ap.add_argument("--images", type=int, default=256, help="synthetic crops held in memory")
    ap.add_argument(
        "--modes",
        default=None,
        help="torch.compile modes to time, comma-separated: default, reduce-overhead, "
        "max-autotune-no-cudagraphs, eager (default: default on CUDA, eager on CPU)",
    )
    ap.add_argument("--no-baseline", action="store_true", help="skip the fp32 baseline")
    ap.add_argument(
        "--compare-colour-padding",
        action="store_true",
        help="also time eager training with the first conv's 3 channels not padded to 8",
    )
    ap.add_argument("--profile", action="store_true", help="print the top kernels of a step")
    ap.add_argument(
        "--sweep",
        action="store_true",
        help="also time eager training over memory format (NHWC/NCHW) x autocast dtype "
        "(bf16/fp16) x cuDNN algorithms tried (benchmark_limit 10 / all)",
    )
    args = ap.parse_args()
    device = torch.device(args.device)
    name = args.config or ("cpm-paper" if device.type == "cuda" else "cpm-small")
    cfg = CONFIGS[name]
    batch = args.batch or (32 if device.type == "cuda" else 16)
    modes = (args.modes or ("default" if device.type == "cuda" else "eager")).split(",")
    codec = cfg.codec()
    data = load_dataset("synthetic", "train", size=args.images)
    crops = pack_crops([data], side=int(cfg.input_size * 1.5), pad=1.5)
    with training_environment(device, 0):
        measure(args, device, name, cfg, batch, modes, codec, crops)


def measure(args, device, name, cfg, batch, modes, codec, crops) -> None:
    where = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    report("setup", where, config=name, batch=batch, input=cfg.input_size)
    results = {}
    for mode in modes:
        compile_mode = None if mode == "eager" else mode
        for train in (True, False):
            torch.manual_seed(0)
            module = CPM(cfg).to(device).to(memory_format=torch.channels_last)
            t = time.perf_counter()
            rate, n = optimised(module, crops, codec, device, batch, args, train, compile_mode)
            key = f"{'train' if train else 'infer'}_img_s[{mode}]"
            results[key] = rate
            report(key, round(rate, 1), steps=n, seconds=round(time.perf_counter() - t, 1))
    if args.compare_colour_padding and device.type == "cuda":
        ColourConv.pad_channels = False
        module = CPM(cfg).to(device).to(memory_format=torch.channels_last)
        rate, n = optimised(module, crops, codec, device, batch, args, True, None)
        report("train_img_s[eager, 3 colour channels unpadded]", round(rate, 1), steps=n)
        ColourConv.pad_channels = True
        module = CPM(cfg).to(device).to(memory_format=torch.channels_last)
        rate, n = optimised(module, crops, codec, device, batch, args, True, None)
        report("train_img_s[eager, padded to 8]", round(rate, 1), steps=n)
    if args.sweep and device.type == "cuda":
        sweep(cfg, crops, codec, device, batch, args)
    if args.profile:
        profile(
            CPM(cfg).to(device).to(memory_format=torch.channels_last), crops, codec, device, batch
        )
    if args.no_baseline:
        return
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    for train in (True, False):
        plain = CPM(cfg).to(device)
        rate, n = baseline(plain, crops, codec, device, batch, args, train)
        key = f"baseline_{'train' if train else 'infer'}_img_s"
        results[key] = rate
        report(key, round(rate, 1), steps=n)
    best_train = max(v for k, v in results.items() if k.startswith("train"))
    best_infer = max(v for k, v in results.items() if k.startswith("infer"))
    report("train_ratio", round(best_train / results["baseline_train_img_s"], 2))
    report("infer_ratio", round(best_infer / results["baseline_infer_img_s"], 2))


if __name__ == "__main__":
    main()
