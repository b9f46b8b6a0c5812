"""Belief-map targets and their decoding: one codec for the forest, the CNN and evaluation.

Output grid cell (u, v) covers input pixels ``[u*stride, (u+1)*stride)``; its centre sits at
``u*stride + (stride-1)/2`` in crop coordinates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from posemachines.errors import PoseMachinesError


def _array_module(x):
    """numpy for numpy arrays, torch for tensors: the same maths serves the CPU and the GPU."""
    if type(x).__module__.startswith("torch"):
        import torch

        return torch
    return np


@dataclass(frozen=True)
class BeliefCodec:
    """Encode joints as P Gaussian belief maps plus background; decode maps back to keypoints.

    Parameters
    ----------
    input_size : int
        Side of the square crop in pixels.
    stride : int
        Input pixels per belief-map cell; the maps are ``input_size // stride`` square.
    sigma : float
        Standard deviation of each joint's Gaussian, in input pixels.
    """

    input_size: int
    stride: int
    sigma: float

    def __post_init__(self):
        if self.input_size % self.stride:
            raise PoseMachinesError(
                f"input size {self.input_size} is not a multiple of the stride {self.stride}"
            )
        if self.sigma <= 0:
            raise PoseMachinesError(f"sigma must be positive, got {self.sigma}")

    @property
    def map_size(self) -> int:
        return self.input_size // self.stride

    def grid(self) -> np.ndarray:
        """Crop coordinate of each map cell's centre along one axis, (map_size,)."""
        return np.arange(self.map_size) * self.stride + (self.stride - 1) / 2.0

    def to_dict(self) -> dict:
        return asdict(self)

    def encode(self, joints, labelled):
        """Target belief maps for crops.

        Parameters
        ----------
        joints : (N, P, 2) array or tensor
            Joint positions in crop pixel coordinates.
        labelled : (N, P) bool
            Unlabelled joints get an empty map.

        Returns
        -------
        maps : (N, P+1, h, w) float32, channel P the background ``max(0, 1 - max_j map_j)``.
        weights : (N, P+1) float32, 0 for unlabelled joints, 1 elsewhere (background included).
        """
        xp = _array_module(joints)
        if xp is np:
            grid = self.grid().astype(np.float32)
            joints = np.asarray(joints, dtype=np.float32)
            mask = np.asarray(labelled).astype(np.float32)
        else:
            # Built on the device: a copy from host memory would make the host wait.
            grid = xp.arange(self.map_size, dtype=joints.dtype, device=joints.device)
            grid = grid * self.stride + (self.stride - 1) / 2.0
            mask = labelled.to(joints.dtype)
        dx2 = (grid[None, None, :] - joints[..., 0:1]) ** 2  # (N, P, w)
        dy2 = (grid[None, None, :] - joints[..., 1:2]) ** 2  # (N, P, h)
        gauss = xp.exp(-(dy2[..., :, None] + dx2[..., None, :]) / (2 * self.sigma**2))
        gauss = gauss * mask[..., None, None]
        peak = gauss.max(1) if xp is np else gauss.amax(1)
        background = xp.clip(1 - peak, 0, None) if xp is np else (1 - peak).clamp(min=0)
        maps = (
            xp.concatenate([gauss, background[:, None]], 1)
            if xp is np
            else xp.cat([gauss, background[:, None]], 1)
        )
        ones = xp.ones_like(mask[:, :1])
        weights = xp.concatenate([mask, ones], 1) if xp is np else xp.cat([mask, ones], 1)
        return maps, weights

    def decode(self, belief_maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints from belief maps, with sub-pixel refinement.

        Parameters
        ----------
        belief_maps : (N, P, h, w)
            The joint channels only (drop the background channel first).

        Returns
        -------
        keypoints : (N, P, 2) crop coordinates, at the maximum of each map refined by a
            parabola through the log-beliefs of its neighbours (exact for a Gaussian).
        confidence : (N, P) the map's maximum.
        """
        maps = np.asarray(belief_maps, dtype=np.float64)
        n, p, h, w = maps.shape
        flat = maps.reshape(n, p, -1)
        best = flat.argmax(-1)
        confidence = np.take_along_axis(flat, best[..., None], -1)[..., 0]
        y, x = np.divmod(best, w)
        logm = np.log(np.maximum(maps, 1e-10))
        ni, pi = np.meshgrid(np.arange(n), np.arange(p), indexing="ij")

        def offset(minus, centre, plus, ok):
            denom = minus - 2 * centre + plus
            with np.errstate(divide="ignore", invalid="ignore"):
                d = np.where(ok & (denom < 0), 0.5 * (minus - plus) / denom, 0.0)
            return np.clip(d, -0.5, 0.5)

        c = logm[ni, pi, y, x]
        okx, oky = (x > 0) & (x < w - 1), (y > 0) & (y < h - 1)
        dx = offset(
            logm[ni, pi, y, np.clip(x - 1, 0, w - 1)],
            c,
            logm[ni, pi, y, np.clip(x + 1, 0, w - 1)],
            okx,
        )
        dy = offset(
            logm[ni, pi, np.clip(y - 1, 0, h - 1), x],
            c,
            logm[ni, pi, np.clip(y + 1, 0, h - 1), x],
            oky,
        )
        keypoints = np.stack([x + dx, y + dy], -1) * self.stride + (self.stride - 1) / 2.0
        return keypoints, confidence
