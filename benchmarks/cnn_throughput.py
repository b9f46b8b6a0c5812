"""Training and inference images/s of a CPM, end to end, against a plain baseline.

Optimised path (what `pm train --backend cnn` does): crops decoded once and kept on the device,
per-sample scale/rotation/flip warped there in batches, targets rendered there, bf16 autocast +
channels_last (+ torch.compile) on CUDA. Baseline: the same network in plain fp32 eager mode,
fed by a naive loader that warps each crop on the CPU with PIL and renders targets with numpy.

    python benchmarks/cnn_throughput.py --device cuda --config cpm-paper --batch 32
    python benchmarks/cnn_throughput.py --device cpu --config cpm-small --batch 16
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from posemachines.crops import Augmentation, apply_affine, warp_image
from posemachines.data import load_dataset
from posemachines.data.pack import pack_crops
from posemachines.stages.cnn import CONFIGS, CPM
from posemachines.targets import BeliefCodec
from posemachines.training.cnn import batch_targets, crop_matrices, stage_losses, warp_batch


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def optimised(module, crops, codec, device, batch, steps, train, compile_):
    runner = torch.compile(module) if compile_ else module
    images = torch.as_tensor(crops.images, device=device)
    aug = Augmentation()
    perm = list(range(crops.joints.shape[1]))
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda")
    rng = np.random.default_rng(0)
    times = []
    for step in range(steps + 3):
        sync(device)
        t = time.perf_counter()
        idx = rng.integers(0, len(crops), batch)
        mats, flips = crop_matrices(crops, codec.input_size, idx, aug if train else None, rng)
        x = warp_batch(images[torch.as_tensor(idx, device=device)], mats, codec.input_size)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        if train:
            targets, weights = batch_targets(crops, idx, mats, flips, perm, codec, device)
            with autocast:
                out = runner(x)
            loss = stage_losses(out, targets, weights).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            with torch.no_grad(), autocast:
                runner(x)
        sync(device)
        if step >= 3:  # warm-up (and compilation) excluded
            times.append(time.perf_counter() - t)
    return batch / float(np.median(times))


def baseline(module, crops, codec, device, batch, steps, train):
    """fp32 eager, crops warped one by one on the CPU (PIL) and targets rendered with numpy."""
    aug = Augmentation()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    times = []
    for step in range(steps + 2):
        sync(device)
        t = time.perf_counter()
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
        else:
            with torch.no_grad():
                module(x)
        sync(device)
        if step >= 2:
            times.append(time.perf_counter() - t)
    return batch / float(np.median(times))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--config", default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--images", type=int, default=256, help="synthetic crops held in memory")
    args = ap.parse_args()
    device = torch.device(args.device)
    name = args.config or ("cpm-paper" if device.type == "cuda" else "cpm-small")
    cfg = CONFIGS[name]
    batch = args.batch or (32 if device.type == "cuda" else 16)
    codec = BeliefCodec(cfg.input_size, cfg.stride, cfg.sigma)
    data = load_dataset("synthetic", "train", size=args.images)
    crops = pack_crops([data], side=int(cfg.input_size * 1.5), pad=1.5)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    results = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "config": name,
        "batch": batch,
        "input": cfg.input_size,
    }
    fast = CPM(cfg).to(device)
    if device.type == "cuda":
        fast = fast.to(memory_format=torch.channels_last)
    compile_ = device.type == "cuda"
    results["train_img_s"] = optimised(
        fast, crops, codec, device, batch, args.steps, True, compile_
    )
    results["infer_img_s"] = optimised(
        fast.eval(), crops, codec, device, batch, args.steps, False, compile_
    )
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    plain = CPM(cfg).to(device)
    results["baseline_train_img_s"] = baseline(plain, crops, codec, device, batch, args.steps, True)
    results["baseline_infer_img_s"] = baseline(
        plain.eval(), crops, codec, device, batch, args.steps, False
    )
    results["train_ratio"] = results["train_img_s"] / results["baseline_train_img_s"]
    results["infer_ratio"] = results["infer_img_s"] / results["baseline_infer_img_s"]
    print(
        json.dumps(
            {k: round(v, 2) if isinstance(v, float) else v for k, v in results.items()}, indent=1
        )
    )


if __name__ == "__main__":
    main()
