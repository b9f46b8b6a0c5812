"""Training options of the CNN backend, as a dataclass the command line is built from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from posemachines.backends.cnn.config import CONFIGS
from posemachines.core.targets import BeliefCodec
from posemachines.devices import resolve_device
from posemachines.errors import PoseMachinesError
from posemachines.options import existing, model_reference, option

DEFAULT_EPOCHS = 40
SUPERVISION = ("all", "final")
# Batch size by network: cpm-gpu's BatchNorm and the GPU want large batches; cpm-paper at 368
# px needs about 0.4 GB per image in training.
DEFAULT_BATCH = {"cpm-gpu": 128, "cpm-paper": 32}
VALIDATIONS_PER_BUDGET = 40  # validation points spread over a --time-budget run


@dataclass(frozen=True)
class CNNSettings:
    """Training options of the CNN backend; stored in the manifest and checked on resume."""

    codec_rank = 1  # a stack without a forest part uses the CNN's crop and grid (not a field)

    config: str = field(
        default="cpm-small",
        metadata=option(
            "cpm-gpu (256 px, 4 stages, BatchNorm), cpm-paper (the paper's network: 368 px, 6 "
            "stages, no normalisation), cpm-small (128 px) or cpm-tiny. Default: cpm-gpu on "
            "CUDA, cpm-small on CPU.",
            choices=tuple(CONFIGS),
        ),
    )
    stages: int | None = field(
        default=None, metadata=option("Number of stages (default: the config's).", minimum=1)
    )
    # DEFAULT_EPOCHS unless time_budget is given
    epochs: int | None = field(
        default=None,
        metadata=option("Training epochs (default 40; or --time-budget).", minimum=1),
    )
    # minutes of training, validation and saving
    time_budget: float | None = field(
        default=None,
        metadata=option(
            "Minutes for the whole run instead of --epochs: the number of steps follows from "
            "the speed of the first steps, and the learning-rate schedule, the validations and "
            "the final save fit in the budget."
        ),
    )
    batch_size: int = field(
        default=16,
        metadata=option(
            "Batch size (default: 128 for cpm-gpu, 32 for cpm-paper, else 16).", minimum=1
        ),
    )
    lr: float | None = field(
        default=None,
        metadata=option(
            "Peak learning rate. Default: AdamW 3e-3 for BatchNorm networks (cpm-small), else "
            "1e-3; SGD 1e-2."
        ),
    )
    optimizer: str = field(
        default="adamw",
        metadata=option(
            "AdamW with warm-up and cosine decay (the default), or the paper's SGD with "
            "momentum and step decay.",
            choices=("adamw", "sgd"),
        ),
    )
    weight_decay: float = 1e-4
    warmup: float = 0.05  # fraction of the steps
    device: str = field(
        default="cpu", metadata=option("cpu, cuda or auto (the default: a GPU when usable).")
    )
    # steps; default 200, or every tenth of a budget run
    checkpoint_every: int | None = field(
        default=None,
        metadata=option(
            "Steps between checkpoints (default 200; with --time-budget a tenth of the run).",
            minimum=1,
        ),
    )
    val_fraction: float = field(
        default=0.05,
        metadata=option("Share of the training data held out for validation PCK (0.05)."),
    )
    seed: int = 0
    scale: tuple = (0.7, 1.3)
    rotation: float = 40.0
    flip: float = 0.5
    compile: bool = False
    log_every: int = 25
    overrides: dict | None = None  # CPMConfig fields that differ from the config's
    # "all": a loss at every stage (the paper); "final": last only
    supervision: str = field(
        default="all",
        metadata=option(
            "A loss at every stage (all, the paper's intermediate supervision; the default) or "
            "at the last stage only (final).",
            choices=SUPERVISION,
        ),
    )
    # steps between gradient summaries in the log (None: off)
    grad_every: int | None = field(
        default=None,
        metadata=option(
            "Every N steps, summarise the gradient magnitudes of each stage into the training "
            "log (off by default).",
            minimum=1,
        ),
    )
    packed: str | None = field(
        default=None,
        metadata=option(
            "Train from a cache written by `pm data pack` (instead of --dataset).",
            flag="--data",
            type=existing("--data", folder=False, hint=" (write one with `pm data pack`)"),
            metavar="PACK",
        ),
    )
    grid: int | None = None  # the belief grid of the stack this network is a part of
    init: str | None = field(
        default=None,
        metadata=option(
            "Fine-tune: start from a model's weights (a model directory or a zoo name): all of "
            "them when it predicts this data's skeleton, else the image trunk (x') alone. Its "
            "network must be the one --config gives; without --config, the model's own.",
            type=model_reference("--init"),
            metavar="MODEL",
        ),
    )

    @classmethod
    def from_options(cls, config=None, device="auto", batch_size=None, **options) -> CNNSettings:
        """Settings from command-line options (None = default); checks them all at once."""
        if options.get("epochs") is not None and options.get("time_budget") is not None:
            raise PoseMachinesError("--epochs and --time-budget are exclusive: give one of them")
        device = resolve_device(device)
        if config is None and options.get("init") is not None:
            config = init_config_name(options["init"])
        config = config or ("cpm-gpu" if device.startswith("cuda") else "cpm-small")
        s = cls(
            config=config,
            device=device,
            compile=device.startswith("cuda"),
            batch_size=batch_size or DEFAULT_BATCH.get(config, 16),
            **{k: v for k, v in options.items() if v is not None},
        )
        s.validate()
        return s

    def validate(self) -> None:
        if self.config not in CONFIGS:
            raise PoseMachinesError(f"unknown CNN config {self.config!r}; use {sorted(CONFIGS)}")
        if self.stages is not None and self.stages < 1:
            raise PoseMachinesError(f"--stages must be at least 1, got {self.stages}")
        if self.epochs is not None and self.time_budget is not None:
            raise PoseMachinesError("--epochs and --time-budget are exclusive: give one of them")
        if self.supervision not in SUPERVISION:
            raise PoseMachinesError(
                f"--supervision must be one of {SUPERVISION}, got {self.supervision!r}"
            )
        for name in ("epochs", "batch_size", "checkpoint_every", "log_every", "grad_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise PoseMachinesError(f"--{name.replace('_', '-')} must be at least 1")
        if self.time_budget is not None and not self.time_budget > 0:
            raise PoseMachinesError(f"--time-budget must be positive, got {self.time_budget}")
        if self.lr is not None and not self.lr > 0:
            raise PoseMachinesError(f"--lr must be positive, got {self.lr}")
        if not 0 <= self.val_fraction < 1:
            raise PoseMachinesError("--val-fraction must be in [0, 1)")
        if self.optimizer not in ("adamw", "sgd"):
            raise PoseMachinesError(f"unknown optimizer {self.optimizer!r}")
        try:
            self.network_config()
        except TypeError as exc:
            raise PoseMachinesError(
                f"unknown network setting in {self.overrides} ({exc})"
            ) from None

    def network_config(self):
        cfg = CONFIGS[self.config]
        cfg = cfg if self.stages is None else replace(cfg, stages=self.stages)
        return replace(cfg, **(self.overrides or {}))

    @property
    def peak_lr(self) -> float:
        """``lr``, else 1e-2 for SGD; for AdamW 3e-3 on networks with BatchNorm (cpm-small
        trains best there, docs/experiments.md) and 1e-3 on the paper's plain network."""
        if self.lr is not None:
            return self.lr
        if self.optimizer == "sgd":
            return 1e-2
        return 3e-3 if CONFIGS[self.config].batch_norm else 1e-3

    def codec(self) -> BeliefCodec:
        return self.network_config().codec()

    def for_stack(self, stages: int, codec: BeliefCodec, on_beliefs: bool) -> CNNSettings:
        """The settings of a stack's part: its stage count, the stack's crop size and grid,
        and (residual) refinement of the beliefs below for a part that is not the first."""
        overrides = dict(self.overrides or {})
        overrides.update(input_size=codec.input_size, foreign_input=on_beliefs, residual=on_beliefs)
        return replace(self, stages=stages, overrides=overrides, grid=codec.map_size)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def init_config_name(reference: str) -> str | None:
    """The network config a model to fine-tune from was trained with (None if unknown)."""
    from posemachines.files.owned import read_json_object
    from posemachines.zoo import resolve

    manifest = read_json_object(resolve(reference)[0] / "manifest.json")
    settings = (manifest.get("training") or {}).get("settings") or {}
    name = settings.get("config")
    return name if name in CONFIGS else None
