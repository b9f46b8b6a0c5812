"""The Convolutional Pose Machine's network (Wei et al., CVPR 2016): image trunk, stage 1,
refinement stages that read the image features, the beliefs before and a centre map.

torch is imported here; nothing imports this module at start-up.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from posemachines.backends.cnn.config import CPMConfig


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
    """A hidden layer: k x k conv (+ BatchNorm if configured) + ReLU; with ``cfg.separable``
    a k x k conv on features is a depthwise k x k then a 1 x 1 across channels."""
    norm = [nn.BatchNorm2d(cout)] if cfg.batch_norm else []
    if cin == 3:
        layers = [ColourConv(cin, cout, k, padding=k // 2)]
    elif cfg.separable and k > 1:
        layers = [nn.Conv2d(cin, cin, k, padding=k // 2, groups=cin), conv(cin, cout, 1)]
    else:
        layers = [conv(cin, cout, k)]
    return [*layers, *norm, nn.ReLU(inplace=True)]


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

    def stage(self, t: int, image: torch.Tensor, computed: dict, previous) -> torch.Tensor:
        """Stage ``t`` (0-based) alone, for whoever chains stages one at a time (the runner's
        CNN stages, the ONNX graph of a model): stage 1 on the image, a later stage on x'
        (computed once into ``computed``), the beliefs before it (``previous(side)``: them
        on x's grid) and the centre map."""
        first = t == 0 and not self.cfg.foreign_input
        if "features" not in computed and (not first or self.cfg.shared_features):
            computed["features"] = self.features(image)
        x = computed.get("features")
        if first:
            return self.first_stage(image, x)
        beliefs = previous(x.shape[-1]).to(x.dtype)
        return self.refinement(t)(x, beliefs, self.centre_map(x.shape[0], x))  # traced batch

    def forward(self, image: torch.Tensor, below: torch.Tensor | None = None) -> list[torch.Tensor]:
        """image: (N, 3, S, S) in [-0.5, 0.5]; ``below``: (N, P+1, S/8, S/8) beliefs of the
        stages under a ``foreign_input`` network. Returns each stage's beliefs (N, P+1, S/8,
        S/8)."""
        x = self.features(image)
        beliefs = [below.to(x.dtype) if self.stage1 is None else self.first_stage(image, x)]
        centre = self.centre_map(image.shape[0], x)  # a traced size: a dynamic batch
        for stage in self.refine:
            beliefs.append(stage(x, beliefs[-1], centre))
        return beliefs[1:] if self.stage1 is None else beliefs

    def refinement(self, t: int) -> RefineStage:
        """The refinement module of stage ``t`` (0-based)."""
        return self.refine[t] if self.stage1 is None else self.refine[t - 1]
