"""Joint sets: names, limbs, left/right flip pairs, the torso pair and the head segment."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from posemachines.errors import PoseMachinesError


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

    def describe(self) -> str:
        return f"{self.name} ({self.num_joints} joints)"

    def matches(self, other: Skeleton) -> bool:
        """Whether keypoints of one mean the same as the other's: the same name and the same
        joint names in the same order (two custom sets may share a name and a count)."""
        return self.name == other.name and tuple(self.joints) == tuple(other.joints)

    def mismatch(self, other: Skeleton) -> str:
        """Why keypoints of ``other`` cannot be read as this skeleton's ("" when they can)."""
        if self.matches(other):
            return ""
        if self.name == other.name and self.num_joints == other.num_joints:
            return (
                f"both are {self.name}, but their joints differ in name or order "
                f"({', '.join(self.joints[:3])}, ... against {', '.join(other.joints[:3])}, ...)"
            )
        return f"{self.describe()} against {other.describe()}"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "joints": list(self.joints),
            "limbs": [list(p) for p in self.limbs],
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "torso": list(self.torso),
            "head": None if self.head is None else list(self.head),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Skeleton:
        try:
            return cls(
                str(d["name"]),
                tuple(d["joints"]),
                tuple(tuple(p) for p in d["limbs"]),
                tuple(tuple(p) for p in d["flip_pairs"]),
                tuple(d["torso"]),
                None if d.get("head") is None else tuple(d["head"]),
            )
        except (KeyError, TypeError) as exc:
            raise PoseMachinesError(f"malformed skeleton definition ({exc})") from None

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

    def facing_segments(self) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """The head (its segment) and the trunk (from the shoulders' midpoint to the hips'), as
        (start joints, end joints): where the face and chest, or hair and back, show which way
        the person faces. Joints are found by name; a skeleton without them has fewer."""

        def named(word):
            return tuple(i for i, name in enumerate(self.joints) if word in name)

        segments = []
        if self.head is not None:
            segments.append(tuple((i,) for i in self.head_indices()))
        shoulders, hips = named("shoulder"), named("hip")
        if shoulders and hips:
            segments.append((shoulders, hips))
        return segments

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

# FLIC's upper body as the CPM release and most FLIC methods score it; the head is the mean of
# the eyes and the nose.
FLIC9 = Skeleton(
    name="flic9",
    joints=(
        "l_shoulder",
        "l_elbow",
        "l_wrist",
        "r_shoulder",
        "r_elbow",
        "r_wrist",
        "l_hip",
        "r_hip",
        "head",
    ),
    limbs=(
        ("l_shoulder", "l_elbow"),
        ("l_elbow", "l_wrist"),
        ("r_shoulder", "r_elbow"),
        ("r_elbow", "r_wrist"),
        ("l_shoulder", "l_hip"),
        ("r_shoulder", "r_hip"),
        ("l_shoulder", "r_shoulder"),
        ("head", "l_shoulder"),
        ("head", "r_shoulder"),
    ),
    flip_pairs=(
        ("l_shoulder", "r_shoulder"),
        ("l_elbow", "r_elbow"),
        ("l_wrist", "r_wrist"),
        ("l_hip", "r_hip"),
    ),
    torso=("l_shoulder", "r_hip"),
    head=None,
)

SKELETONS = {s.name: s for s in (LSP14, MPII16, COCO17, FLIC9)}


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


def get_skeleton(name: str, definition: dict | None = None) -> Skeleton:
    """A known joint set by name, or one rebuilt from its ``definition`` (``to_dict``): a
    custom set read from a COCO-format file."""
    if name in SKELETONS:
        return SKELETONS[name]
    if definition is not None:
        return Skeleton.from_dict(definition)
    raise PoseMachinesError(f"unknown skeleton {name!r}; known: {', '.join(sorted(SKELETONS))}")


def _counterpart(name: str, names) -> str | None:
    """The other side's joint of ``name`` (left_knee <-> right_knee, l_eye <-> r_eye)."""
    for a, b in (("left", "right"), ("right", "left")):
        if a in name:
            other = name.replace(a, b)
            if other in names:
                return other
    for a, b in (("l_", "r_"), ("r_", "l_"), ("L", "R"), ("R", "L")):
        if name.startswith(a) and b + name[len(a) :] in names:
            return b + name[len(a) :]
    return None


def skeleton_from_keypoints(
    name: str, joints, pairs=(), joints_xy: np.ndarray | None = None, labelled=None
) -> Skeleton:
    """A joint set for keypoints of any kind (a hand, an animal): flip pairs from left/right
    names, limbs from ``pairs`` (index pairs), the torso pair from shoulder and hip names or
    else the two joints farthest apart on average in ``joints_xy`` (N, P, 2)."""
    joints = tuple(str(j) for j in joints)
    if len(set(joints)) != len(joints) or not joints:
        raise PoseMachinesError(f"skeleton {name!r}: keypoint names must be unique and given")
    flips = []
    for j in joints:
        other = _counterpart(j, joints)
        if other and (other, j) not in flips and other != j:
            flips.append((j, other))
    limbs = tuple((joints[a], joints[b]) for a, b in pairs)
    torso = None
    for left, right in (("left_shoulder", "right_hip"), ("l_shoulder", "r_hip")):
        if left in joints and right in joints:
            torso = (left, right)
    if torso is None:
        if len(joints) < 2:
            raise PoseMachinesError(f"skeleton {name!r}: needs at least two keypoints")
        torso = _widest_pair(joints, joints_xy, labelled)
    return Skeleton(name, joints, limbs, tuple(flips), torso, None)


def _widest_pair(joints, xy, labelled) -> tuple[str, str]:
    """The two joints farthest apart on average (the normaliser PCK needs), or the first two."""
    if xy is None or not len(xy):
        return joints[0], joints[1]
    xy = np.where(labelled[..., None], xy, np.nan)
    d = np.linalg.norm(xy[:, :, None] - xy[:, None], axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # pairs never labelled together
        mean = np.nan_to_num(np.nanmean(d, 0), nan=-1)
    a, b = np.unravel_index(np.argmax(mean), mean.shape)
    return (joints[a], joints[b]) if a != b else (joints[0], joints[1])
