"""Metrics as pure functions of (predictions, ground truth, skeleton), and a results object.

Conventions, decided once for every metric:

* Only labelled joints are scored; unlabelled ones are left out of every count.
* A missing prediction (NaN, e.g. an image that could not be read) counts as wrong.
* A joint whose normaliser is zero or unavailable (the torso or head joints of that person are
  unlabelled or coincide) cannot be scored by that metric and is left out of its count.
* A metric with nothing to count is NaN (never a silent 0 or 1); JSON writes it as null.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from posemachines.core.skeletons import Skeleton

PCK_THRESHOLDS = np.linspace(0.0, 0.2, 21)  # the range of the CPM paper's LSP curves
OKS_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCO's
# COCO's per-keypoint OKS sigmas, in the order of COCO-17 (cocoapi's COCOeval).
COCO_SIGMAS = (
    np.array([26, 25, 25, 35, 35, 79, 79, 72, 72, 62, 62, 107, 107, 87, 87, 89, 89]) / 1000.0
)
# What a dataset may hand the scorer (``PoseDataset.scoring``):
#   head_size : (N,) the official PCKh normaliser (MPII: 0.6 x the head box diagonal);
#               without it PCKh uses the head segment, and says so.
#   area      : (N,) each person's area (COCO segment area): with it, OKS AP is scored.
#   oks_sigmas: (P,) per-joint OKS sigmas (default: COCO's for COCO-17, else 0.05 each).
#   pck_subset: (label, joint names): a PCK@0.2 over those joints alone (FLIC: elbows, wrists).


def _segment_length(gt: np.ndarray, labelled: np.ndarray, pair: tuple[int, int]) -> np.ndarray:
    a, b = pair
    length = np.linalg.norm(gt[:, a] - gt[:, b], axis=-1)
    ok = labelled[:, a] & labelled[:, b] & (length > 0)
    return np.where(ok, length, np.nan)


def torso_size(gt: np.ndarray, labelled: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    """(N,) distance between the skeleton's torso joints (LSP: left shoulder, right hip)."""
    return _segment_length(gt, labelled, skeleton.torso_indices())


def head_size(gt: np.ndarray, labelled: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    """(N,) length of the head segment (LSP: neck to head top); NaN without one."""
    pair = skeleton.head_indices()
    if pair is None:
        return np.full(len(gt), np.nan)
    return _segment_length(gt, labelled, pair)


def bbox_size(gt: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """(N,) longer side of the bounding box of the labelled joints."""
    pts = np.where(labelled[..., None], gt, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: no labelled joint
        side = np.nanmax(np.nanmax(pts, 1) - np.nanmin(pts, 1), -1)
    return np.where(side > 0, side, np.nan)


def joint_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, P) Euclidean distance; inf where the prediction is missing."""
    err = np.linalg.norm(np.asarray(pred, float) - np.asarray(gt, float), axis=-1)
    return np.where(np.isnan(err), np.inf, err)


def correct_within(
    pred: np.ndarray, gt: np.ndarray, labelled: np.ndarray, normaliser: np.ndarray, alpha: float
) -> np.ndarray:
    """(N, P) float: 1 correct, 0 wrong, NaN not scorable (unlabelled or no normaliser)."""
    err = joint_errors(pred, gt)
    ok = (err <= alpha * normaliser[:, None]).astype(float)
    scorable = labelled & np.isfinite(normaliser)[:, None]
    return np.where(scorable, ok, np.nan)


def _mean(x: np.ndarray, axis=None):
    x = np.asarray(x, float)
    count = np.sum(~np.isnan(x), axis=axis)
    total = np.nansum(x, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def pck(pred, gt, labelled, normaliser, alpha: float) -> float:
    """Fraction of scorable joints within ``alpha * normaliser`` of the ground truth."""
    return float(_mean(correct_within(pred, gt, labelled, normaliser, alpha)))


def torso_pck_by(pred, gt, labelled, skeleton: Skeleton, axis: int, alpha: float = 0.2):
    """PCK@alpha (torso normaliser) per joint (``axis=0``, shape (P,)) or per image (``axis=1``,
    shape (N,)); NaN where nothing can be scored."""
    torso = torso_size(gt, labelled, skeleton)
    return _mean(correct_within(pred, gt, labelled, torso, alpha), axis=axis)


def pcp_correct(pred, gt, labelled, skeleton: Skeleton) -> np.ndarray:
    """(N, L) strict PCP: a limb is correct when both endpoints lie within half its length.

    A limb is scored when both its endpoints are labelled and its length is non-zero.
    """
    err = joint_errors(pred, gt)
    out = []
    for a, b in skeleton.limb_indices():
        length = _segment_length(gt, labelled, (a, b))
        ok = (err[:, a] <= 0.5 * length) & (err[:, b] <= 0.5 * length)
        out.append(np.where(np.isfinite(length), ok.astype(float), np.nan))
    return np.stack(out, 1)


def object_keypoint_similarity(pred, gt, labelled, area, sigmas) -> np.ndarray:
    """(N,) COCO's OKS of each person: mean over labelled joints of exp(-d^2 / (2 s^2 k^2)),
    s^2 the person's area, k = 2 sigma; a missing prediction is 0; NaN with no joint."""
    d2 = np.sum((np.asarray(pred, float) - gt) ** 2, -1)
    k2 = (2 * np.asarray(sigmas, float)) ** 2
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(-d2 / (2 * k2[None] * (np.asarray(area, float)[:, None] + np.spacing(1))))
    e = np.where(np.isnan(e), 0.0, e)
    count = labelled.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (e * labelled).sum(1) / np.maximum(count, 1), np.nan)


def average_precision(oks: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """COCO's AP at one OKS threshold for one prediction per ground-truth person (its own
    box)."""
    keep = np.isfinite(oks)
    oks, scores = oks[keep], np.asarray(scores, float)[keep]
    if not len(oks):
        return float("nan")
    return ranked_ap(oks >= threshold, scores, len(oks))


def ranked_ap(hits, scores, total: int) -> float:
    """COCO's AP of predictions that are ``hits`` or not, ranked by ``scores``, among
    ``total`` true objects: precision interpolated at 101 recall points."""
    if total == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, float), kind="mergesort")
    tp = np.asarray(hits, float)[order]
    if not len(tp):
        return 0.0
    recall = np.cumsum(tp) / total
    precision = np.cumsum(tp) / np.arange(1, len(tp) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the envelope from the right
    at = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    return float(np.mean(np.where(at < len(recall), precision[np.minimum(at, len(tp) - 1)], 0)))


def oks_sigmas(skeleton: Skeleton, scoring: dict | None = None) -> np.ndarray:
    """The dataset's per-joint OKS sigmas, else COCO's for COCO-17, else 0.05 each."""
    sigmas = (scoring or {}).get("oks_sigmas")
    if sigmas is not None:
        return np.asarray(sigmas, float)
    return COCO_SIGMAS if skeleton.name == "coco17" else np.full(skeleton.num_joints, 0.05)


def oks_ap(pred, gt, labelled, skeleton: Skeleton, scoring: dict, scores) -> dict:
    """AP, AP50 and AP75 over the people, as COCO's keypoint evaluation scores them."""
    sigmas = oks_sigmas(skeleton, scoring)
    oks = object_keypoint_similarity(pred, gt, labelled, scoring["area"], sigmas)
    scores = np.ones(len(oks)) if scores is None else np.asarray(scores, float)
    aps = [average_precision(oks, scores, t) for t in OKS_THRESHOLDS]
    return {"oks_ap": float(np.mean(aps)), "oks_ap50": aps[0], "oks_ap75": aps[5]}


def _dataset_metrics(pred, gt, labelled, skeleton, scoring, scores, head, torso) -> dict:
    """The overall metrics a dataset's own protocol adds."""
    overall = {}
    if skeleton.name == "mpii16":  # the official "Mean": every joint but pelvis and thorax
        keep = [j for j, n in enumerate(skeleton.joints) if n not in ("pelvis", "thorax")]
        overall["pckh@0.5_mean"] = _mean(correct_within(pred, gt, labelled, head, 0.5)[:, keep])
    if "area" in scoring:
        overall.update(oks_ap(pred, gt, labelled, skeleton, scoring, scores))
    if "pck_subset" in scoring:
        label, names = scoring["pck_subset"]
        idx = [skeleton.index(n) for n in names]
        ok = correct_within(pred, gt, labelled, torso, 0.2)[:, idx]
        overall[f"pck@0.2_{label}"] = _mean(ok)
    return overall


def _metric_table(pred, gt, labelled, skeleton: Skeleton, scoring=None, scores=None):
    """Overall and per-joint metrics for one set of predictions."""
    scoring = scoring or {}
    torso = torso_size(gt, labelled, skeleton)
    head = scoring.get("head_size")
    head = head_size(gt, labelled, skeleton) if head is None else np.asarray(head, float)
    c02 = correct_within(pred, gt, labelled, torso, 0.2)
    c01 = correct_within(pred, gt, labelled, torso, 0.1)
    ch = correct_within(pred, gt, labelled, head, 0.5)
    ch1 = correct_within(pred, gt, labelled, head, 0.1)
    curve = np.stack([correct_within(pred, gt, labelled, torso, a) for a in PCK_THRESHOLDS])
    limbs = pcp_correct(pred, gt, labelled, skeleton)
    cbox = correct_within(pred, gt, labelled, bbox_size(gt, labelled), 0.2)
    overall = {
        "pck@0.2": _mean(c02),
        "pck@0.1": _mean(c01),
        "pckh@0.5": _mean(ch),
        "pckh@0.1": _mean(ch1),
        "pcp": _mean(limbs),
        "auc": _mean(_mean(curve.reshape(len(PCK_THRESHOLDS), -1), axis=1)),
        "pck_bbox@0.2": _mean(cbox),
    }
    overall.update(_dataset_metrics(pred, gt, labelled, skeleton, scoring, scores, head, torso))
    # A joint's PCP is that of the limbs it ends (a per-joint view of the limb metric).
    per_joint = {}
    limb_idx = skeleton.limb_indices()
    j02, j01, jh = _mean(c02, 0), _mean(c01, 0), _mean(ch, 0)
    jcurve = _mean(_mean(curve, axis=1), axis=0)
    jbox = _mean(cbox, 0)
    for j, name in enumerate(skeleton.joints):
        touching = [k for k, (a, b) in enumerate(limb_idx) if j in (a, b)]
        per_joint[name] = {
            "pck@0.2": j02[j],
            "pck@0.1": j01[j],
            "pckh@0.5": jh[j],
            "pckh@0.1": _mean(ch1, 0)[j],
            "pcp": _mean(limbs[:, touching]) if touching else np.nan,
            "auc": jcurve[j],
            "pck_bbox@0.2": jbox[j],
        }
    return _clean(overall), {k: _clean(v) for k, v in per_joint.items()}


def _clean(d: dict) -> dict:
    return {k: (None if v is None or not np.isfinite(v) else float(v)) for k, v in d.items()}


def pck_curve(pred, gt, labelled, skeleton: Skeleton, thresholds=PCK_THRESHOLDS) -> list:
    torso = torso_size(gt, labelled, skeleton)
    return [pck(pred, gt, labelled, torso, a) for a in thresholds]


@dataclass
class EvaluationResult:
    """Scores of one model (every stage) on one dataset split; ``to_dict`` is the JSON contract."""

    dataset: str
    split: str
    n: int
    protocol: str
    skeleton: str
    metrics: dict
    per_joint: dict
    per_stage: list
    pck_curve: list = field(default_factory=list)
    thresholds: list = field(default_factory=list)
    test_time_augmentation: dict = field(default_factory=lambda: {"flip": False, "scales": [1.0]})
    skipped_images: list = field(default_factory=list)  # unreadable, scored as missing
    notes: list = field(default_factory=list)  # how the dataset's own metrics were scored

    def to_dict(self) -> dict:
        return asdict(self)


def score_keypoints(
    stage_predictions: np.ndarray,
    gt: np.ndarray,
    labelled: np.ndarray,
    skeleton: Skeleton,
    dataset: str = "",
    split: str = "",
    protocol: str = "",
    scoring: dict | None = None,
    scores: np.ndarray | None = None,
) -> EvaluationResult:
    """Score predictions of every stage; the final stage gives ``metrics`` and ``per_joint``.

    stage_predictions : (T, N, P, 2) or (N, P, 2) image coordinates (a single "stage").
    scoring : what the dataset hands its official scorers (see the top of this module).
    scores : (N,) or (T, N) confidence of each prediction, which ranks them for OKS AP.
    """
    scoring = scoring or {}
    preds = np.asarray(stage_predictions, dtype=float)
    if preds.ndim == 3:
        preds = preds[None]
    gt = np.asarray(gt, dtype=float)
    if preds.shape[1:] != gt.shape:
        raise ValueError(f"predictions {preds.shape[1:]} do not match ground truth {gt.shape}")
    if scores is None:
        scores = [None] * len(preds)
    elif np.ndim(scores) == 1:
        scores = np.broadcast_to(scores, (len(preds), len(scores)))
    tables = [_metric_table(p, gt, labelled, skeleton, scoring, s) for p, s in zip(preds, scores)]
    per_stage = [overall for overall, _ in tables]
    metrics, per_joint = dict(tables[-1][0]), tables[-1][1]  # its own dict, as a result's field
    curve = pck_curve(preds[-1], gt, labelled, skeleton)
    return EvaluationResult(
        dataset=dataset,
        split=split,
        n=int(gt.shape[0]),
        protocol=protocol,
        skeleton=skeleton.name,
        metrics=metrics,
        per_joint=per_joint,
        per_stage=per_stage,
        pck_curve=[None if math.isnan(v) else v for v in curve],
        thresholds=[float(t) for t in PCK_THRESHOLDS],
        notes=scoring_notes(skeleton, scoring),
    )


def scoring_notes(skeleton: Skeleton, scoring: dict) -> list[str]:
    """How the metrics that depend on the dataset were scored, for every result and report."""
    notes = []
    if "head_size" in scoring:
        notes.append("PCKh normaliser: the head box (0.6 x its diagonal), the official one")
    elif skeleton.head is not None:
        notes.append(f"PCKh normaliser: the head segment ({' to '.join(skeleton.head)})")
    if "area" in scoring:
        notes.append(
            "OKS AP over the people with their ground-truth boxes (single-person, top-down: "
            "one prediction per person, ranked by its mean confidence)"
        )
    if "pck_subset" in scoring:
        label, names = scoring["pck_subset"]
        notes.append(f"pck@0.2_{label}: PCK@0.2 (torso) over {', '.join(names)}")
    return notes
