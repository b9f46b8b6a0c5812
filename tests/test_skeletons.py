import pytest

from posemachines.core.skeletons import COCO17, LSP14, MPII16, SKELETONS, get_skeleton
from posemachines.errors import PoseMachinesError


def test_lsp_order_matches_the_dataset():
    assert LSP14.joints[:3] == ("r_ankle", "r_knee", "r_hip")
    assert LSP14.joints[12:] == ("neck", "head_top")
    assert LSP14.num_joints == 14


@pytest.mark.parametrize("skeleton", [LSP14, MPII16, COCO17])
def test_flip_permutation_is_an_involution_that_swaps_sides(skeleton):
    perm = skeleton.flip_permutation()
    assert [perm[i] for i in perm] == list(range(skeleton.num_joints))
    for i, j in enumerate(perm):
        a, b = skeleton.joints[i], skeleton.joints[j]
        if a.startswith(("l_", "r_")):
            assert a[2:] == b[2:] and a[0] != b[0]
        else:
            assert i == j


def test_normalisers():
    assert LSP14.torso_indices() == (9, 2)  # left shoulder, right hip
    assert LSP14.head_indices() == (12, 13)
    assert COCO17.head_indices() is None
    assert set(SKELETONS) == {"lsp14", "mpii16", "coco17", "flic9"}


def test_unknown_skeleton():
    with pytest.raises(PoseMachinesError, match="unknown skeleton"):
        get_skeleton("nope")
