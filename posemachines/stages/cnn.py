"""The Convolutional Pose Machine (Wei et al., CVPR 2016) and its stages for the runner.

torch is imported here only; nothing else in the package imports this module at start-up.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..devices import autocast
from ..targets import BeliefCodec
from . import StageState


@dataclass(frozen=True)
class CPMConfig:
    """Architecture of a CPM; ``cpm-paper`` is the paper's network, the others are variants.

    The image trunk is ``pools`` blocks of [conv x n, 3x3 max-pool stride 2] (one conv of
    ``image_channels`` each, as in the paper, unless ``block_channels`` / ``block_convs`` say
    otherwise; a last entry beyond ``pools`` adds convs at the final resolution), then one
    ``feature_kernel`` conv to ``feature_channels``: x'. The paper gives stage 1 its own trunk;
    ``shared_features`` lets stage 1 read x' instead, as the authors' released models do.
    """

    num_joints: int = 14
    stages: int = 6
    input_size: int = 368
    pools: int = 3  # stride = 2 ** pools
    image_channels: int = 128  # width of the [conv + pool] blocks
    image_kernel: int = 9
    feature_channels: int = 32  # x' (and stage 1's 5x5 conv)
    stage1_hidden: int = 512
    stage1_kernel: int = 9
    refine_channels: int = 128
    refine_kernel: int = 11
    centre_sigma: float = 21.0  # Gaussian centre map, input pixels
    sigma: float = 8.0  # belief-map targets, input pixels
    batch_norm: bool = False  # BatchNorm after every hidden conv (not in the paper)
    block_channels: tuple = ()  # per trunk block; () = image_channels for each of the pools
    block_convs: tuple = ()  # convs per trunk block; () = one each
    feature_kernel: int = 5
    shared_features: bool = False  # stage 1 reads x' (no trunk of its own)
    refine_convs: int = 3  # k x k convs per refinement stage, before its two 1x1 convs
    # Every stage refines beliefs: the first reads those of the stages below it in a stack
    # (a forest's, say) instead of the image alone. No image-only stage 1 then.
    foreign_input: bool = False
    # Refinement stages add their output to the beliefs they read, so each starts as the
    # identity (heads begin near zero) and learns a correction: a stage on a forest's beliefs
    # then begins at the forest's accuracy instead of relearning it from scratch.
    residual: bool = False

    def __post_init__(self):
        # JSON gives lists back; keep the dataclass hashable and comparable.
        object.__setattr__(self, "block_channels", tuple(self.block_channels))
        object.__setattr__(self, "block_convs", tuple(self.block_convs))

    @property
    def stride(self) -> int:
        return 2**self.pools

    def blocks(self) -> list[tuple[int, int, bool]]:
        """(channels, convs, pooled) for every trunk block, in order."""
        channels = self.block_channels or (self.image_channels,) * self.pools
        convs = self.block_convs or (1,) * len(channels)
        return [(c, n, i < self.pools) for i, (c, n) in enumerate(zip(channels, convs))]

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def codec(self) -> BeliefCodec:
        """The belief maps this network is trained to produce."""
        return BeliefCodec(self.input_size, self.stride, self.sigma)


CONFIGS = {
    "cpm-paper": CPMConfig(),
    # The GPU network (the default on CUDA): a VGG-like trunk with BatchNorm shared by every
    # stage (as in the authors' released models), 256-px input, 7x7 refinement stages.
    "cpm-gpu": CPMConfig(
        stages=4,
        input_size=256,
        pools=3,
        image_kernel=3,
        block_channels=(32, 64, 128, 256),
        block_convs=(2, 2, 3, 3),
        feature_channels=128,
        feature_kernel=3,
        shared_features=True,
        stage1_hidden=512,
        stage1_kernel=1,
        refine_channels=128,
        refine_kernel=7,
        refine_convs=3,
        centre_sigma=15.0,
        sigma=8.0,
        batch_norm=True,
    ),
    # Same structure as the paper, sized to train on a 2-core CPU in minutes: 128-px input,
    # stride 8, 3x3 image convolutions and BatchNorm (from scratch it learns in a few hundred
    # steps where the plain network sat on the all-background plateau).
    "cpm-small": CPMConfig(
        stages=3,
        input_size=128,
        pools=3,
        image_channels=24,
        image_kernel=3,
        feature_channels=32,
        stage1_hidden=96,
        stage1_kernel=5,
        refine_channels=32,
        refine_kernel=5,
        centre_sigma=10.0,
        sigma=8.0,
        batch_norm=True,
    ),
    # A smoke-test network: trains in seconds, learns little.
    "cpm-tiny": CPMConfig(
        stages=2,
        input_size=32,
        pools=2,
        image_channels=8,
        image_kernel=3,
        feature_channels=8,
        stage1_hidden=16,
        stage1_kernel=3,
        refine_channels=8,
        refine_kernel=3,
        centre_sigma=4.0,
        sigma=2.0,
    ),
}


def _he_init(m: nn.Module) -> None:
    """He initialisation: PyTorch's default shrinks the signal through these deep ReLU stacks
    (the paper's network has no normalisation layer), and training from scratch then stalls at
    all-background.
    """
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        nn.init.zeros_(m.bias)


def conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class ColourConv(nn.Conv2d):
    """The first convolution, on the 3 colour channels.

    On CUDA the input and the weights are zero-padded to 8 channels: the same sums, but the
    tensor-core kernels want channel counts that are multiples of 8 and fall back to slower
    ones for 3.
    """

    pad_channels = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (x.is_cuda and self.pad_channels and self.in_channels % 8):
            return super().forward(x)
        extra = 8 - self.in_channels % 8
        x = F.pad(x, (0, 0, 0, 0, 0, extra)).contiguous(memory_format=torch.channels_last)
        w = F.pad(self.weight, (0, 0, 0, 0, 0, extra))
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


def conv_relu(cin: int, cout: int, k: int, cfg: CPMConfig) -> list[nn.Module]:
    """A hidden layer: k x k conv (+ BatchNorm if configured) + ReLU."""
    norm = [nn.BatchNorm2d(cout)] if cfg.batch_norm else []
    layer = ColourConv(cin, cout, k, padding=k // 2) if cin == 3 else conv(cin, cout, k)
    return [layer, *norm, nn.ReLU(inplace=True)]


def image_blocks(cfg: CPMConfig) -> list[nn.Module]:
    """The trunk's [k x k conv (x n), ReLU, 3x3 max-pool stride 2] blocks."""
    layers, cin = [], 3
    for channels, convs, pooled in cfg.blocks():
        for _ in range(convs):
            layers += conv_relu(cin, channels, cfg.image_kernel, cfg)
            cin = channels
        if pooled:
            layers.append(nn.MaxPool2d(3, stride=2, padding=1))
    return layers


def trunk_channels(cfg: CPMConfig) -> int:
    return cfg.blocks()[-1][0]


class Stage1(nn.Module):
    """Beliefs from the image alone: its own trunk (the paper) or x' (``shared_features``)."""

    def __init__(self, cfg: CPMConfig):
        super().__init__()
        p1 = cfg.num_joints + 1
        own_trunk = []
        if not cfg.shared_features:
            own_trunk = [
                *image_blocks(cfg),
                *conv_relu(trunk_channels(cfg), cfg.feature_channels, cfg.feature_kernel, cfg),
            ]
        self.net = nn.Sequential(
            *own_trunk,
            *conv_relu(cfg.feature_channels, cfg.stage1_hidden, cfg.stage1_kernel, cfg),
            *conv_relu(cfg.stage1_hidden, cfg.stage1_hidden, 1, cfg),
            conv(cfg.stage1_hidden, p1, 1),
        )

    def forward(self, x):
        """x: the image, or x' when the features are shared."""
        return self.net(x)


class ImageFeatures(nn.Sequential):
    """x': the image features shared by every stage t >= 2, computed once."""

    def __init__(self, cfg: CPMConfig):
        super().__init__(
            *image_blocks(cfg),
            *conv_relu(trunk_channels(cfg), cfg.feature_channels, cfg.feature_kernel, cfg),
        )


class RefineStage(nn.Module):
    """Stage t >= 2: x' + the previous beliefs + the centre map -> new beliefs."""

    def __init__(self, cfg: CPMConfig):
        super().__init__()
        self.residual = cfg.residual
        p1, w, k = cfg.num_joints + 1, cfg.refine_channels, cfg.refine_kernel
        layers = conv_relu(cfg.feature_channels + p1 + 1, w, k, cfg)
        for _ in range(cfg.refine_convs - 1):
            layers += conv_relu(w, w, k, cfg)
        self.net = nn.Sequential(*layers, *conv_relu(w, w, 1, cfg), conv(w, p1, 1))

    def forward(self, features, beliefs, centre):
        new = self.net(torch.cat([features, beliefs, centre], 1))
        return beliefs + new if self.residual else new


class CPM(nn.Module):
    """Stage 1 on the image, then T-1 refinement stages on x', beliefs and the centre map."""

    def __init__(self, cfg: CPMConfig):
        super().__init__()
        self.cfg = cfg
        self.stage1 = None if cfg.foreign_input else Stage1(cfg)
        self.features = ImageFeatures(cfg)
        refinements = cfg.stages if cfg.foreign_input else cfg.stages - 1
        self.refine = nn.ModuleList(RefineStage(cfg) for _ in range(refinements))
        self.register_buffer("centre", self._centre_map(cfg), persistent=False)
        self.apply(_he_init)
        heads = [r.net[-1] for r in self.refine]
        for head in heads if self.stage1 is None else [self.stage1.net[-1], *heads]:
            # Beliefs start near zero: He-scaled outputs begin far from every target, and the
            # first few hundred steps would go into shrinking them.
            nn.init.normal_(head.weight, std=1e-3)

    @staticmethod
    def _centre_map(cfg: CPMConfig) -> torch.Tensor:
        """The Gaussian centre map (person-centred crops), pooled to belief resolution."""
        g = torch.arange(cfg.input_size, dtype=torch.float32) - (cfg.input_size - 1) / 2
        m = torch.exp(-(g[:, None] ** 2 + g[None, :] ** 2) / (2 * cfg.centre_sigma**2))
        # Kept 2-D: a (1, 1, h, w) buffer turned channels_last has two unit strides, which
        # DistributedDataParallel's buffer broadcast refuses as overlapping memory.
        return F.avg_pool2d(m[None, None], cfg.stride)[0, 0]

    def centre_map(self, n: int, like: torch.Tensor) -> torch.Tensor:
        return self.centre.to(like.dtype).expand(n, 1, -1, -1)

    def stage_parameters(self) -> dict[str, list[nn.Parameter]]:
        """The parameters of each part, in the order of the figure: stage 1 (with its own
        trunk, as in the paper), the shared image features x', then stages 2..T."""
        groups = {} if self.stage1 is None else {"stage 1": list(self.stage1.parameters())}
        groups["x'"] = list(self.features.parameters())
        first = 1 if self.stage1 is None else 2
        for t, stage in enumerate(self.refine, first):
            groups[f"stage {t}"] = list(stage.parameters())
        return groups

    def first_stage(self, image: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        return self.stage1(features if self.cfg.shared_features else image)

    def forward(self, image: torch.Tensor, below: torch.Tensor | None = None) -> list[torch.Tensor]:
        """image: (N, 3, S, S) in [-0.5, 0.5]; ``below``: (N, P+1, S/8, S/8) beliefs of the
        stages under a ``foreign_input`` network. Returns each stage's beliefs (N, P+1, S/8,
        S/8)."""
        x = self.features(image)
        beliefs = [below.to(x.dtype) if self.stage1 is None else self.first_stage(image, x)]
        centre = self.centre_map(len(image), x)
        for stage in self.refine:
            beliefs.append(stage(x, beliefs[-1], centre))
        return beliefs[1:] if self.stage1 is None else beliefs

    def refinement(self, t: int) -> RefineStage:
        """The refinement module of stage ``t`` (0-based)."""
        return self.refine[t] if self.stage1 is None else self.refine[t - 1]


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
        with autocast(self.device):
            if "image" not in state:
                state["image"] = to_input(crops, self.device, channels_last=True)
            first = t == 0 and not self.cfg.foreign_input
            if "features" not in state and (not first or self.cfg.shared_features):
                state["features"] = self.module.features(state["image"])
            x = state.get("features")
            if first:
                out = self.module.first_stage(state["image"], x)
            else:
                # Reuse our own tensor when the previous beliefs are what we returned last.
                if state.get("last_numpy") is previous:
                    prev = state["last_tensor"]
                else:
                    prev = resample(
                        torch.as_tensor(np.asarray(previous), device=self.device), x.shape[-1]
                    )
                prev = prev.to(x.dtype)
                refine = self.module.refinement(t)
                out = refine(x, prev, self.module.centre_map(len(x), x))
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
    from ..errors import PoseMachinesError

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


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


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
