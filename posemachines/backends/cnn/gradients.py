"""How large the gradients are that reach each stage: the measurement behind the CPM paper's
argument for intermediate supervision (a loss at every stage keeps early stages learning).

At chosen steps the absolute gradients of each stage's parameters are summarised into a
histogram over fixed log-spaced edges (so that runs and steps compare bin by bin), the share of
exact zeros, the mean and three quantiles. Reading the gradients changes nothing the optimiser
does.
"""

from __future__ import annotations

import numpy as np
import torch

# |g| bin edges: 1e-12 ... 1e2, half a decade per bin; smaller non-zero values go to the first
# bin, larger ones to the last.
GRADIENT_EDGES = [float(10.0**e) for e in np.arange(-12.0, 2.01, 0.5)]
QUANTILES = (0.1, 0.5, 0.9)
_MAX_VALUES = 1 << 24  # torch.quantile's limit; larger groups are thinned by a fixed stride


def gradient_summary(groups: dict[str, list[torch.nn.Parameter]]) -> dict[str, dict]:
    """Per group: ``histogram`` (fractions of the non-zero |g| per bin of GRADIENT_EDGES),
    ``zero`` (fraction of exact zeros), ``mean`` and ``q10`` / ``q50`` / ``q90`` of |g|."""
    out = {}
    lo, hi = np.log10(GRADIENT_EDGES[0]), np.log10(GRADIENT_EDGES[-1])
    bins = len(GRADIENT_EDGES) - 1
    for name, params in groups.items():
        grads = [p.grad.detach().abs().flatten().float() for p in params if p.grad is not None]
        if not grads:
            continue
        g = torch.cat(grads)
        nonzero = g[g > 0]
        logs = torch.log10(nonzero).clamp(lo, hi - 1e-9)
        counts = torch.histc(logs, bins=bins, min=lo, max=hi)
        sample = g[:: max(1, len(g) // _MAX_VALUES)]
        q = torch.quantile(sample, torch.tensor(QUANTILES, device=g.device))
        stats = torch.cat(
            [counts / max(len(nonzero), 1), g.mean()[None], q, (g == 0).float().mean()[None]]
        )
        values = stats.cpu().numpy().astype(float)  # the one wait for the device
        out[name] = {
            "histogram": values[:bins].round(6).tolist(),
            "mean": float(values[bins]),
            **{f"q{int(100 * p)}": float(v) for p, v in zip(QUANTILES, values[bins + 1 : -1])},
            "zero": round(float(values[-1]), 6),
        }
    return out
