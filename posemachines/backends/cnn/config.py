"""The architectures of the Convolutional Pose Machine (Wei et al., CVPR 2016) as data.

No torch here: the command line lists and checks configurations without loading it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from posemachines.core.targets import BeliefCodec


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
    # Every k x k convolution after the first (k > 1) as a depthwise k x k followed by a 1 x 1
    # (MobileNet's factorisation): about k*k times fewer multiply-adds, what a CPU needs.
    separable: bool = False

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
    # The CPU network of the zoo (chosen by short runs on 2 cores, docs/experiments.md): 160-px
    # crops, a trunk shared by every stage and four times cpm-small's width where it is cheap
    # (the 20x20 grid), 4 stages. Depthwise-separable convolutions (``separable``) cut the
    # multiply-adds but trained slower on the CPU: PyTorch's depthwise backward is slow.
    "cpm-cpu": CPMConfig(
        stages=4,
        input_size=160,
        pools=3,
        image_kernel=3,
        block_channels=(24, 48, 96, 96),
        block_convs=(1, 1, 2, 2),
        feature_channels=64,
        feature_kernel=3,
        shared_features=True,
        stage1_hidden=128,
        stage1_kernel=1,
        refine_channels=48,
        refine_kernel=5,
        refine_convs=3,
        centre_sigma=12.0,
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
