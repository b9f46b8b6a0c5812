"""Everything that decides a forest Pose Machine, as a dataclass the command line is built from."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

from posemachines.core.targets import BeliefCodec
from posemachines.errors import PoseMachinesError
from posemachines.options import model_reference, option


def share_or_name(value: str) -> float | str:
    """--max-features as the settings take it: a number where it reads as one."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


@dataclass(frozen=True)
class ForestSettings:
    """Everything that decides a forest Pose Machine; stored in its manifest."""

    codec_rank = 2  # a stack with a forest part uses the forest's crop and grid (not a field)

    stages: int = field(default=3, metadata=option("Number of stages.", minimum=1))
    trees: int = field(default=40, metadata=option("Trees per stage.", minimum=1))
    # None: grow each branch until its leaves are min_samples_leaf
    depth: int | None = field(
        default=None, metadata=option("Maximum tree depth (default: none).", minimum=1)
    )
    forest: str = "extra"  # "extra" (extremely randomised trees) or "random"
    min_samples_leaf: int = field(default=2, metadata=option("Smallest leaf of a tree.", minimum=1))
    max_features: float | str = field(
        default=0.1,
        metadata=option(
            "Features tried at each split: a share of them (default 0.1), 'sqrt' or 'log2'.",
            type=share_or_name,
            metavar="SHARE|sqrt|log2",
        ),
    )
    input_size: int = 160
    stride: int = 4
    sigma: float = 6.0
    folds: int = 2
    positive_radius: float = 1.5  # in output cells: locations this close to a joint are positives
    background: int = 150  # background locations sampled per image
    # Hard negatives: a share of them that stages t >= 2 take where stage t-1 believed most
    # in a joint away from every joint (its false alarms), in place of those drawn anywhere
    # (the half near the body stays; a share over 0.5 adds rows), so that a stage learns to
    # correct the mistakes of the one before (LSP stage 2: 48.3 -> 49.3).
    hard_negatives: float = field(
        default=0.0,
        metadata=option(
            "Share of each image's background locations that stages after the first take "
            "where the stage before believed most, away from every joint (default 0)."
        ),
    )
    hog_cells: tuple = (8, 20)
    colour_cell: int = 12
    # (cell px, grid) of each colour self-similarity descriptor among the image features
    similarity: tuple = ((3, 7), (6, 5), (12, 3))
    context_cells: tuple = (2, 6)
    top_k: int = 2
    appearance_context: bool = True  # psi_3: colour at z against colour at each joint's peak
    # psi_4: the colours along the believed head and trunk, given to every location: which
    # way a person faces decides which side is left (LSP stage 2: 47.6 -> 48.3).
    segment_colours: bool = field(
        default=False,
        metadata=option(
            "Give every location the colours along the believed head and trunk, which show "
            "which way the person faces (default: no).",
            negative="--no-segment-colours",
        ),
    )
    smooth: float = 1.0  # Gaussian smoothing of each belief map, in cells
    # Also train on mirrored copies (left and right swapped). None: yes for real data, where
    # people face both ways; no for the synthetic figures, which always face the camera.
    mirror: bool | None = field(
        default=None,
        metadata=option(
            "Also train on mirrored images (default: yes for real data, no for synthetic).",
            negative="--no-mirror",
        ),
    )
    # The paper's multi-level parts: each stage first predicts composite parts (limbs, the
    # whole body), whose context then feeds the joint level. Two to three times the training.
    hierarchy: bool = field(
        default=False,
        metadata=option(
            "Add the part hierarchy: limb and whole-body beliefs feed the joint level."
        ),
    )
    # Keep each stage's out-of-fold forests, joined, as the stage's forest (folds x trees trees,
    # each fitted on (folds - 1) / folds of the images) instead of fitting it again on all
    # images: the refit costs a third of the training with three folds, and the joined forest
    # predicts better than one of the same cost (LSP stage 1: 45.5 against 44.4).
    fold_forests: bool = field(
        default=False,
        metadata=option(
            "Keep each stage's out-of-fold forests, joined (folds x trees trees), as its "
            "forest instead of fitting it again on all images (default: --refit).",
            negative="--refit",
        ),
    )
    # Extra smoothing of the last stage's beliefs (in cells) before decoding. None: choose it
    # from FINAL_SMOOTH_CHOICES by PCK on the last stage's held-out beliefs on one fold
    # (training images only), which costs the last stage one fold forest.
    final_smooth: float | None = None
    # Forest stages trained on top of another model's first stages (a hybrid).
    init: str | None = field(
        default=None,
        metadata=option(
            "Train forest stages on top of this model's stages (hybrid): a model directory "
            "or a zoo name.",
            type=model_reference("--init"),
            metavar="MODEL",
        ),
    )
    init_stages: int = field(
        default=1,
        metadata=option("How many stages of --init to keep below the forest stages.", minimum=1),
    )

    @classmethod
    def from_options(cls, **options) -> ForestSettings:
        return cls(**{k: v for k, v in options.items() if v is not None})

    def validate(self, n_samples: int | None = None) -> None:
        """Refuse impossible settings before any work starts."""
        if self.stages < 1:
            raise PoseMachinesError(f"--stages must be at least 1, got {self.stages}")
        if self.trees < 1:
            raise PoseMachinesError(f"--trees must be at least 1, got {self.trees}")
        if self.min_samples_leaf < 1:
            raise PoseMachinesError(
                f"--min-samples-leaf must be at least 1, got {self.min_samples_leaf}"
            )
        if self.depth is not None and self.depth < 1:
            raise PoseMachinesError(f"--depth must be at least 1, got {self.depth}")
        share = self.max_features
        if share not in ("sqrt", "log2") and not (
            isinstance(share, (int, float)) and 0 < share <= 1
        ):
            raise PoseMachinesError(
                f"--max-features must be 'sqrt', 'log2' or a share in (0, 1], got {share!r}"
            )
        if not 0 <= self.hard_negatives <= 1:
            raise PoseMachinesError(
                f"--hard-negatives must be a share in [0, 1], got {self.hard_negatives}"
            )
        if self.forest not in ("extra", "random"):
            raise PoseMachinesError(f"forest must be 'extra' or 'random', not {self.forest!r}")
        if self.final_smooth is not None and self.final_smooth < 0:
            raise PoseMachinesError(f"final_smooth must be >= 0, got {self.final_smooth}")
        if self.folds < 2:
            raise PoseMachinesError(f"stacking needs at least 2 folds, got {self.folds}")
        windows = [(cell, 3) for cell in (*self.hog_cells, self.colour_cell)]
        for cell, grid in windows + [tuple(pair) for pair in self.similarity]:
            if grid < 1 or grid % 2 == 0:
                raise PoseMachinesError(f"a feature grid must be odd and positive, got {grid}")
            if cell * grid > self.input_size:
                raise PoseMachinesError(
                    f"feature window of {cell * grid} px ({grid} x {cell}-px cells) is larger "
                    f"than the {self.input_size}-px input"
                )
        self.codec()  # checks the geometry
        if n_samples is not None and n_samples < self.folds:
            raise PoseMachinesError(
                f"{self.folds}-fold stacking needs at least {self.folds} training images, "
                f"the dataset has {n_samples}"
            )

    def resolved(self, dataset, init_codec: BeliefCodec | None = None) -> ForestSettings:
        """The settings a run uses: mirroring decided for the data (None: yes for real data,
        no for the synthetic figures), the geometry of the stages below a hybrid."""
        changes = {}
        if self.mirror is None:
            changes["mirror"] = dataset.name != "synthetic"
        if init_codec is not None:
            changes.update(
                input_size=init_codec.input_size, stride=init_codec.stride, sigma=init_codec.sigma
            )
        return replace(self, **changes)

    def codec(self) -> BeliefCodec:
        return BeliefCodec(self.input_size, self.stride, self.sigma)

    def stage_config(self, num_classes: int, num_parts: int = 0, segments=()) -> dict:
        """The feature settings a stage keeps; ``segments``: the skeleton's facing segments."""
        return {
            "num_parts": num_parts if self.hierarchy else 0,
            "stride": self.stride,
            "hog_cells": list(self.hog_cells),
            "colour_cell": self.colour_cell,
            "similarity": [list(pair) for pair in self.similarity],
            "context_cells": list(self.context_cells),
            "top_k": self.top_k,
            "appearance_context": self.appearance_context,
            "segment_colours": [[list(a), list(b)] for a, b in segments]
            if self.segment_colours
            else [],
            "smooth": self.smooth,
            "num_classes": num_classes,
        }

    def to_dict(self) -> dict:
        """Plain JSON values (tuples as lists), so a dict read back from JSON compares equal."""
        return json.loads(json.dumps(asdict(self)))
