"""Choosing a torch device without importing torch unless it is needed."""

from __future__ import annotations

from .errors import PoseMachinesError


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
