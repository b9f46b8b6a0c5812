"""CPM stages for the runner: a network shared by its stages, each stage one of its outputs."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from posemachines.backends.cnn.config import CPMConfig
from posemachines.backends.cnn.network import CPM
from posemachines.core.stage import StageState
from posemachines.devices import autocast
from posemachines.errors import PoseMachinesError


def resample(beliefs: torch.Tensor, size: int) -> torch.Tensor:
    """Belief maps (N, C, h, w) on a ``size`` x ``size`` grid over the same crop (bilinear at
    the cell centres, which tile the crop on every grid)."""
    if beliefs.shape[-1] == size:
        return beliefs
    return F.interpolate(beliefs, size=(size, size), mode="bilinear", align_corners=False)


def to_input(crops, device, channels_last: bool = False) -> torch.Tensor:
    """(N, S, S, 3) uint8 crops (array or tensor) -> (N, 3, S, S) float in [-0.5, 0.5]."""
    t = (
        crops.to(device)
        if torch.is_tensor(crops)
        else torch.tensor(np.asarray(crops), device=device)
    )
    t = t.permute(0, 3, 1, 2).float().div_(255).sub_(0.5)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


class CPMNetwork:
    """A CPM with its device, shared by the runner stages that use it."""

    def __init__(self, cfg: CPMConfig, module: CPM | None = None, device: str = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.module = (module or CPM(cfg)).to(self.device, memory_format=torch.channels_last)
        self.module.eval()

    def config_dict(self) -> dict:
        return self.cfg.to_dict()

    def state_dict(self) -> dict:
        return self.module.state_dict()

    @torch.no_grad()
    def stage_forward(self, t: int, crops, previous, cache: dict, grid: int | None = None):
        """Stage ``t`` (0-based) of this network, following the stage contract.

        Beliefs of other stages on another grid are resampled to this network's grid on the
        way in, and the output to ``grid`` (the model's) on the way out.
        """
        key = ("cnn", id(self))
        state = cache.setdefault(key, {})

        def previous_on(side: int) -> torch.Tensor:
            # Our own tensor when the previous beliefs are what we returned last.
            if state.get("last_numpy") is previous:
                return state["last_tensor"]
            return resample(torch.as_tensor(np.asarray(previous), device=self.device), side)

        with autocast(self.device):
            if "image" not in state:
                state["image"] = to_input(crops, self.device, channels_last=True)
            out = self.module.stage(t, state["image"], state, previous_on)
        result = resample(out.float(), grid or out.shape[-1]).cpu().numpy()
        state["last_numpy"], state["last_tensor"] = result, out
        return result


class CPMStage:
    """Stage ``index`` of a CPM, for the runner."""

    kind = "cnn"

    def __init__(self, network: CPMNetwork, index: int, grid: int | None = None):
        self.network = network
        self.index = index
        self.grid = grid  # the model's belief grid, when the network's own is another

    def beliefs(self, crops, previous, cache) -> np.ndarray:
        return self.network.stage_forward(self.index, crops, previous, cache, self.grid)

    def config(self) -> dict:
        return {"index": self.index, **({"grid": self.grid} if self.grid else {})}

    def state(self) -> StageState:
        return StageState(config=self.config(), network=self.network)

    @classmethod
    def from_state(cls, state: StageState) -> CPMStage:
        return cls(state.network, state.config["index"], state.config.get("grid"))

    @staticmethod
    def network_from_state(config: dict, tensors: dict, device: str = "cpu") -> CPMNetwork:
        """The shared network of a saved model (its config and safetensors tensors)."""
        return build_network(config, tensors, device)


def build_network(config: dict, state: dict | None = None, device: str = "cpu") -> CPMNetwork:
    try:
        cfg = CPMConfig(**config)
    except TypeError as exc:
        raise PoseMachinesError(f"unknown CNN configuration fields ({exc})") from None
    module = CPM(cfg)
    if state is not None:
        missing, unexpected = module.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise PoseMachinesError(
                f"CNN weights do not match the configuration (missing {list(missing)[:3]}, "
                f"unexpected {list(unexpected)[:3]})"
            )
    return CPMNetwork(cfg, module, device)
