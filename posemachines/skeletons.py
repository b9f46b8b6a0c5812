"""Joint sets: names, limbs, left/right flip pairs, the torso pair and the head segment."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import PoseMachinesError


@dataclass(frozen=True)
class Skeleton:
    """A declarative joint set.

    Attributes
    ----------
    name : str
        Identifier stored in model manifests and prediction files.
    joints : tuple of str
        Joint names in the dataset's order; P = len(joints).
    limbs : tuple of (str, str)
        Joint pairs drawn as sticks and scored by PCP.
    flip_pairs : tuple of (str, str)
        Left/right counterparts swapped by a horizontal flip.
    torso : (str, str)
        The pair whose distance normalises PCK (LSP: left shoulder to right hip).
    head : (str, str) or None
        The head segment that normalises PCKh, where the skeleton has one.
    """

    name: str
    joints: tuple[str, ...]
    limbs: tuple[tuple[str, str], ...]
    flip_pairs: tuple[tuple[str, str], ...]
    torso: tuple[str, str]
    head: tuple[str, str] | None = None

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    def index(self, joint: str) -> int:
        return self.joints.index(joint)

    def limb_indices(self) -> list[tuple[int, int]]:
        return [(self.index(a), self.index(b)) for a, b in self.limbs]

    def flip_permutation(self) -> list[int]:
        """Index map that swaps left and right joints: flipped[i] = original[perm[i]]."""
        perm = list(range(self.num_joints))
        for a, b in self.flip_pairs:
            ia, ib = self.index(a), self.index(b)
            perm[ia], perm[ib] = ib, ia
        return perm

    def composite_parts(self) -> list[tuple[int, ...]]:
        """The joints of each composite part of the Pose Machine hierarchy: every limb, then the
        whole body."""
        return [*self.limb_indices(), tuple(range(self.num_joints))]

    def kinematic_groups(self) -> dict[str, list[int]]:
        """Joints near the body's centre and joints far down the kinematic chain, by name:
        the two groups the CPM paper contrasts when it argues for large receptive fields."""
        near = ("head", "neck", "nose", "eye", "ear", "shoulder", "thorax")
        far = ("elbow", "wrist", "knee", "ankle")
        groups = {"head and shoulders": [], "elbows, wrists, knees, ankles": []}
        for i, name in enumerate(self.joints):
            if any(word in name for word in near):
                groups["head and shoulders"].append(i)
            elif any(word in name for word in far):
                groups["elbows, wrists, knees, ankles"].append(i)
        return groups

    def torso_indices(self) -> tuple[int, int]:
        return self.index(self.torso[0]), self.index(self.torso[1])

    def head_indices(self) -> tuple[int, int] | None:
        return None if self.head is None else (self.index(self.head[0]), self.index(self.head[1]))


# Shared by the LSP and MPII joint sets, which name arms and legs alike.
ARMS_AND_LEGS = (
    ("r_ankle", "r_knee"),
    ("r_knee", "r_hip"),
    ("l_hip", "l_knee"),
    ("l_knee", "l_ankle"),
    ("r_wrist", "r_elbow"),
    ("r_elbow", "r_shoulder"),
    ("l_shoulder", "l_elbow"),
    ("l_elbow", "l_wrist"),
)
LIMB_FLIP_PAIRS = (
    ("r_ankle", "l_ankle"),
    ("r_knee", "l_knee"),
    ("r_hip", "l_hip"),
    ("r_wrist", "l_wrist"),
    ("r_elbow", "l_elbow"),
    ("r_shoulder", "l_shoulder"),
)

LSP14 = Skeleton(
    name="lsp14",
    joints=(
        "r_ankle",
        "r_knee",
        "r_hip",
        "l_hip",
        "l_knee",
        "l_ankle",
        "r_wrist",
        "r_elbow",
        "r_shoulder",
        "l_shoulder",
        "l_elbow",
        "l_wrist",
        "neck",
        "head_top",
    ),
    limbs=ARMS_AND_LEGS
    + (
        ("neck", "head_top"),
        ("r_shoulder", "r_hip"),
        ("l_shoulder", "l_hip"),
    ),
    flip_pairs=LIMB_FLIP_PAIRS,
    torso=("l_shoulder", "r_hip"),
    head=("neck", "head_top"),
)

MPII16 = Skeleton(
    name="mpii16",
    joints=(
        "r_ankle",
        "r_knee",
        "r_hip",
        "l_hip",
        "l_knee",
        "l_ankle",
        "pelvis",
        "thorax",
        "upper_neck",
        "head_top",
        "r_wrist",
        "r_elbow",
        "r_shoulder",
        "l_shoulder",
        "l_elbow",
        "l_wrist",
    ),
    limbs=ARMS_AND_LEGS
    + (
        ("upper_neck", "head_top"),
        ("pelvis", "thorax"),
    ),
    flip_pairs=LIMB_FLIP_PAIRS,
    torso=("l_shoulder", "r_hip"),
    head=("upper_neck", "head_top"),
)

COCO17 = Skeleton(
    name="coco17",
    joints=(
        "nose",
        "l_eye",
        "r_eye",
        "l_ear",
        "r_ear",
        "l_shoulder",
        "r_shoulder",
        "l_elbow",
        "r_elbow",
        "l_wrist",
        "r_wrist",
        "l_hip",
        "r_hip",
        "l_knee",
        "r_knee",
        "l_ankle",
        "r_ankle",
    ),
    limbs=(
        ("l_ankle", "l_knee"),
        ("l_knee", "l_hip"),
        ("r_ankle", "r_knee"),
        ("r_knee", "r_hip"),
        ("l_hip", "r_hip"),
        ("l_shoulder", "l_hip"),
        ("r_shoulder", "r_hip"),
        ("l_shoulder", "r_shoulder"),
        ("l_shoulder", "l_elbow"),
        ("r_shoulder", "r_elbow"),
        ("l_elbow", "l_wrist"),
        ("r_elbow", "r_wrist"),
        ("l_eye", "r_eye"),
        ("nose", "l_eye"),
        ("nose", "r_eye"),
        ("l_eye", "l_ear"),
        ("r_eye", "r_ear"),
    ),
    flip_pairs=(
        ("l_eye", "r_eye"),
        ("l_ear", "r_ear"),
        ("l_shoulder", "r_shoulder"),
        ("l_elbow", "r_elbow"),
        ("l_wrist", "r_wrist"),
        ("l_hip", "r_hip"),
        ("l_knee", "r_knee"),
        ("l_ankle", "r_ankle"),
    ),
    torso=("l_shoulder", "r_hip"),
    head=None,
)

SKELETONS = {s.name: s for s in (LSP14, MPII16, COCO17)}


def part_positions(joints: np.ndarray, labelled: np.ndarray, parts) -> tuple:
    """Where composite parts are: the mean of each part's labelled joints.

    Parameters
    ----------
    joints : (N, P, 2) joint positions; labelled : (N, P) bool.
    parts : sequence of joint-index tuples (``Skeleton.composite_parts()``).

    Returns
    -------
    positions : (N, L, 2) float; labelled : (N, L) bool, true where more than half of the
    part's joints are labelled (both joints of a limb).
    """
    joints = np.asarray(joints, dtype=np.float64)
    labelled = np.asarray(labelled, dtype=bool)
    positions = np.zeros((len(joints), len(parts), 2))
    known = np.zeros((len(joints), len(parts)), dtype=bool)
    for k, members in enumerate(parts):
        m = labelled[:, list(members)]
        count = m.sum(1)
        total = (joints[:, list(members)] * m[..., None]).sum(1)
        positions[:, k] = total / np.maximum(count, 1)[:, None]
        known[:, k] = count > len(members) / 2
    return positions, known


def get_skeleton(name: str) -> Skeleton:
    try:
        return SKELETONS[name]
    except KeyError:
        raise PoseMachinesError(
            f"unknown skeleton {name!r}; known: {', '.join(sorted(SKELETONS))}"
        ) from None
