"""The one place that decides where CNN work runs and in which precision.

``resolve_device`` turns cpu / cuda / auto into a concrete device without importing torch
unless it must; ``autocast`` is the precision policy every CNN path uses (bf16 autocast on
CUDA, float32 on the CPU); ``training_environment`` sets the seed and the global torch flags a
training run needs and puts them back afterwards.
"""

from __future__ import annotations

from contextlib import contextmanager

from posemachines.errors import PoseMachinesError


def resolve_device(device: str) -> str:
    """``auto`` gives cuda when a GPU is usable, else cpu; ``cuda`` without a GPU is an error."""
    device = device.lower()
    if device == "cpu":
        return "cpu"
    if device not in ("auto", "cuda") and not device.startswith("cuda:"):
        raise PoseMachinesError(f"unknown device {device!r}; use cpu, cuda or auto")
    try:
        import torch
    except ImportError:
        if device == "auto":
            return "cpu"
        raise PoseMachinesError(
            "--device cuda needs PyTorch (pip install 'posemachines[cnn]'); or use --device auto"
        ) from None
    if torch.cuda.is_available():
        return "cuda" if device == "auto" else device
    if device == "auto":
        return "cpu"
    raise PoseMachinesError(
        f"--device {device} was asked for but no CUDA GPU is available; use --device auto "
        "(falls back to the CPU) or --device cpu"
    )


def autocast(device):
    """bf16 autocast on CUDA (float32 weights, bf16 matrix work), plain float32 elsewhere."""
    import torch

    device = torch.device(device)
    return torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")


@contextmanager
def training_environment(device, seed: int):
    """Seed torch's generators and set the flags of a training run, restoring both after.

    CUDA: cuDNN's autotuner (the shapes are the same every step) and TF32 for what stays in
    float32. CPU: deterministic algorithms, so that a seed gives the same model.
    """
    import torch

    device = torch.device(device)
    backends = torch.backends
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        backends.cudnn.benchmark,
        backends.cuda.matmul.allow_tf32,
        backends.cudnn.allow_tf32,
    )
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        if device.type == "cuda":
            backends.cudnn.benchmark = True
            backends.cuda.matmul.allow_tf32 = True
            backends.cudnn.allow_tf32 = True
        else:
            torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
            backends.cudnn.benchmark = saved[2]
            backends.cuda.matmul.allow_tf32 = saved[3]
            backends.cudnn.allow_tf32 = saved[4]
