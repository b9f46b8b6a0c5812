"""ONNX Runtime against torch on this machine's CPU: agreement and speed.

    python benchmarks/onnx_speed.py [MODEL_DIR ...]

For the given model directories (default: none) and for cpm-small and cpm-gpu with random
weights: the largest |difference| between every stage's beliefs from torch and from ONNX
Runtime on crops of the synthetic test split, and the median milliseconds per image of the
network alone (crops already made) at batch 1 and 16: torch eager, ONNX Runtime float32, ONNX
Runtime int8 (calibrated on 32 synthetic training crops).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from posemachines.backends.cnn.config import CONFIGS
from posemachines.backends.cnn.stage import CPMStage, build_network
from posemachines.core.model import PoseModel
from posemachines.core.skeletons import LSP14
from posemachines.core.targets import BeliefCodec
from posemachines.data import load_dataset
from posemachines.loading import load_model
from posemachines.onnx.export import calibration_crops, onnx_file_bytes, quantised
from posemachines.onnx.model_file import describe, onnx_pose_model, with_metadata


def random_model(name: str) -> PoseModel:
    torch.manual_seed(0)
    cfg = CONFIGS[name]
    network = build_network(cfg.to_dict())
    stages = [CPMStage(network, t) for t in range(cfg.stages)]
    return PoseModel("cnn", LSP14, BeliefCodec(cfg.input_size, cfg.stride, 2.0), stages)


def median_ms(run, crops, batch: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        part = crops[:batch]
        start = time.perf_counter()
        run(part)
        times.append((time.perf_counter() - start) * 1000 / batch)
    return float(np.median(times))


def measure(label: str, model: PoseModel) -> None:
    test = load_dataset("synthetic", "test", size=32)
    train = load_dataset("synthetic", "train", size=32)
    crops = calibration_crops(model, test, 32).astype(np.uint8)
    fp32 = onnx_pose_model(onnx_file_bytes(model), label)
    int8_bytes = quantised(onnx_file_bytes(model), calibration_crops(model, train, 32))
    int8 = onnx_pose_model(with_metadata(int8_bytes, describe(model, True)), label)
    torch_beliefs = model.stage_beliefs(crops)
    ort_beliefs = fp32.stage_beliefs(crops)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(torch_beliefs, ort_beliefs))
    print(f"{label}: max |torch - onnxruntime| over every stage's beliefs: {diff:.2e}")
    slow = label.startswith("cpm-gpu")
    for batch in (1, 16):
        repeats = 3 if slow else 10
        row = [median_ms(m.stage_beliefs, crops, batch, repeats) for m in (model, fp32, int8)]
        print(
            f"  batch {batch:2d}: torch {row[0]:7.1f} ms/img   onnxruntime fp32 {row[1]:7.1f} "
            f"({row[0] / row[1]:.2f}x)   int8 {row[2]:7.1f} ({row[0] / row[2]:.2f}x)"
        )


def main() -> None:
    torch.set_num_threads(torch.get_num_threads())
    for path in sys.argv[1:]:
        measure(path, load_model(path))
    for name in ("cpm-small", "cpm-gpu"):
        measure(f"{name} (random weights)", random_model(name))


if __name__ == "__main__":
    main()
