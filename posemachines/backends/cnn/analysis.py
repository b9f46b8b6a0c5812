"""What a CPM sees: receptive fields by construction and measured, and its cost in FLOPs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import nn

from posemachines.backends.cnn.config import CPMConfig
from posemachines.backends.cnn.network import CPM


def _grow(layers, rf: float, jump: float) -> tuple[float, float]:
    """Receptive field and jump (input pixels between neighbouring outputs) after ``layers``:
    each k x k window of stride s adds (k - 1) x jump and multiplies the jump by s."""
    for layer in layers:
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            k = layer.kernel_size if isinstance(layer.kernel_size, int) else layer.kernel_size[0]
            s = layer.stride if isinstance(layer.stride, int) else layer.stride[0]
            rf, jump = rf + (k - 1) * jump, jump * s
    return rf, jump


def receptive_fields(cfg: CPMConfig) -> list[int]:
    """The analytic receptive field of every stage's output, in input pixels.

    Stage 1 sees what its layers (its own trunk, or the shared x') reach; stage t >= 2 sees
    the union of x' and stage t-1's beliefs, widened by its own convolutions. A network on
    foreign beliefs counts from x' alone (the reach of the stages below is theirs).
    """
    module = CPM(replace(cfg, stages=max(cfg.stages, 1)))
    features_rf, jump = _grow(module.features, 1, 1)
    if module.stage1 is None:
        rf, fields = features_rf, []
    else:
        start = (features_rf, jump) if cfg.shared_features else (1, 1)
        rf, _ = _grow(module.stage1.net, *start)
        fields = [rf]
    for stage in module.refine:
        rf, _ = _grow(stage.net, max(rf, features_rf), jump)
        fields.append(rf)
    return [int(f) for f in fields]


def flops_per_image(cfg: CPMConfig) -> int:
    """Floating-point operations of one forward pass over one crop (all stages)."""
    from torch.utils.flop_counter import FlopCounterMode

    module = CPM(cfg).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(torch.zeros(1, 3, cfg.input_size, cfg.input_size), _blank_below(cfg, 1))
    return int(counter.get_total_flops())


def _blank_below(cfg: CPMConfig, n: int) -> torch.Tensor | None:
    """Zero beliefs standing in for the stages below a network on foreign beliefs, for
    measurements that only need its shapes; None for a network that starts from the image."""
    if not cfg.foreign_input:
        return None
    side = cfg.input_size // cfg.stride
    return torch.zeros(n, cfg.num_joints + 1, side, side)


def effective_receptive_fields(module: CPM, n: int = 8, seed: int = 0) -> np.ndarray:
    """|d output / d input| of every stage, (T, S, S), for the centre cell of the belief maps
    (all joint channels summed), averaged over ``n`` random inputs: where each stage really
    looks, as against the analytic field its layers allow."""
    cfg = module.cfg
    size, p = cfg.input_size, cfg.num_joints
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=generator) - 0.5
    x.requires_grad_(True)
    module = module.eval()
    maps, below = [], _blank_below(cfg, n)
    for t in range(cfg.stages):
        x.grad = None
        beliefs = module(x, below)[t]
        c = beliefs.shape[-1] // 2
        beliefs[:, :p, c, c].sum().backward()
        maps.append(x.grad.abs().sum(1).mean(0).numpy())
    return np.stack(maps)


def effective_radius(erf: np.ndarray, mass: float = 0.95) -> float:
    """Radius (input pixels) of the disc about the centre that holds ``mass`` of a map's total."""
    h, w = erf.shape
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2).ravel()
    order = np.argsort(r)
    cumulative = np.cumsum(erf.ravel()[order])
    if cumulative[-1] <= 0:
        return 0.0
    return float(r[order][np.searchsorted(cumulative, mass * cumulative[-1])])
