import numpy as np
import pytest

from posemachines.core.skeletons import LSP14
from posemachines.evaluation.metrics import pck, pcp_correct, score_keypoints, torso_size


def _person():
    """An LSP person whose torso (left shoulder to right hip) is exactly 10 px."""
    gt = np.zeros((1, 14, 2))
    gt[0, :, 0] = np.arange(14) * 20.0  # joints far apart from each other
    gt[0, 9] = [0.0, 0.0]  # l_shoulder
    gt[0, 2] = [6.0, 8.0]  # r_hip -> torso 10
    gt[0, 12] = [100.0, 0.0]  # neck
    gt[0, 13] = [100.0, 4.0]  # head top -> head 4
    return gt


def test_ground_truth_scores_one():
    gt = _person()
    r = score_keypoints(gt, gt, np.ones((1, 14), bool), LSP14)
    assert all(v == 1.0 for v in r.metrics.values())
    assert r.per_stage[0]["pck@0.2"] == 1.0


def test_known_perturbations_give_exact_values():
    gt = _person()
    labelled = np.ones((1, 14), bool)
    pred = gt.copy()
    pred[0, 0, 0] += 1.9  # within 0.2 * 10, not within 0.1 * 10
    pred[0, 1, 1] += 2.5  # wrong at 0.2
    pred[0, 4, 0] += 0.9  # right at both
    torso = torso_size(gt, labelled, LSP14)
    assert torso[0] == 10
    assert pck(pred, gt, labelled, torso, 0.2) == pytest.approx(13 / 14)
    assert pck(pred, gt, labelled, torso, 0.1) == pytest.approx(12 / 14)
    r = score_keypoints(pred, gt, labelled, LSP14)
    assert r.metrics["pck@0.2"] == pytest.approx(13 / 14)
    assert r.per_joint["r_knee"]["pck@0.2"] == 0.0
    assert r.per_joint["r_ankle"]["pck@0.1"] == 0.0
    # PCKh: head segment 4 -> threshold 2 px: joints 0 (1.9) ok, 1 (2.5) wrong, 4 ok
    assert r.metrics["pckh@0.5"] == pytest.approx(13 / 14)


def test_strict_pcp_needs_both_endpoints():
    gt = np.zeros((1, 14, 2))
    gt[0, :, 0] = np.arange(14) * 10.0  # r_ankle-r_knee limb has length 10
    labelled = np.ones((1, 14), bool)
    pred = gt.copy()
    pred[0, 0, 1] += 4.9  # ankle within 5 -> limb still right
    ok = pcp_correct(pred, gt, labelled, LSP14)
    assert ok[0, 0] == 1.0
    pred[0, 1, 1] += 5.1  # knee beyond half the limb -> both limbs at the knee wrong
    ok = pcp_correct(pred, gt, labelled, LSP14)
    assert ok[0, 0] == 0.0 and ok[0, 1] == 0.0 and ok[0, 2] == 1.0


def test_unlabelled_joints_are_excluded_and_missing_predictions_are_wrong():
    gt = _person()
    labelled = np.ones((1, 14), bool)
    labelled[0, 0] = False
    pred = gt.copy()
    pred[0, 0] = [1e6, 1e6]  # unlabelled: does not count
    pred[0, 1] = np.nan  # missing: counts as wrong
    r = score_keypoints(pred, gt, labelled, LSP14)
    assert r.metrics["pck@0.2"] == pytest.approx(12 / 13)


def test_zero_normaliser_leaves_the_person_out():
    gt = np.concatenate([_person(), _person()])
    gt[1, 2] = gt[1, 9]  # coincident torso joints: no normaliser for person 2
    pred = gt.copy()
    pred[1] += 1000  # would all be wrong, but cannot be scored
    r = score_keypoints(pred, gt, np.ones((2, 14), bool), LSP14)
    assert r.metrics["pck@0.2"] == 1.0


def test_nothing_scorable_is_nan_not_zero():
    gt = _person()
    r = score_keypoints(gt, gt, np.zeros((1, 14), bool), LSP14)
    assert r.metrics["pck@0.2"] is None


def test_auc_of_a_constant_error():
    gt = _person()
    pred = gt + np.array([1.0, 0.0])  # every joint 1 px off: 0.1 of the torso
    r = score_keypoints(pred, gt, np.ones((1, 14), bool), LSP14)
    thresholds = np.linspace(0, 0.2, 21)
    assert r.metrics["auc"] == pytest.approx(np.mean(thresholds >= 0.1 - 1e-12))


def test_per_stage_order():
    gt = _person()
    stages = np.stack([gt + 5.0, gt])
    r = score_keypoints(stages, gt, np.ones((1, 14), bool), LSP14)
    assert r.per_stage[0]["pck@0.2"] == 0.0 and r.per_stage[1]["pck@0.2"] == 1.0
