"""Context features psi(z, b_{t-1}) computed from the previous stage's belief maps."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from posemachines.backends.forest.features import colour_distance, pooled_samples


def patch_context(
    beliefs: np.ndarray, cells: tuple[int, ...] = (1, 3, 7), grid: int = 3
) -> np.ndarray:
    """psi_1: for every joint map, beliefs pooled in patches around z at several scales.

    beliefs : (P+1, h, w); the background channel is ignored.
    Returns (h, w, P * len(cells) * grid * grid): at cell size c the patch spans
    ``grid * c`` map cells, so distant context is seen coarsely.
    """
    maps = np.asarray(beliefs[:-1], dtype=np.float32)
    h, w = maps.shape[1:]
    ys, xs = np.arange(h), np.arange(w)
    return np.concatenate([pooled_samples(maps, c, grid, ys, xs) for c in cells], -1)


def belief_peaks(beliefs: np.ndarray, top_k: int = 2, nms_size: int = 3):
    """Top-K local maxima of each joint map: positions (P, K, 2) as (x, y) and scores (P, K).

    Missing peaks (a flat map) get score 0 at the map centre.
    """
    maps = np.asarray(beliefs[:-1], dtype=np.float32)
    p, h, w = maps.shape
    is_peak = maps == ndimage.maximum_filter(maps, size=(1, nms_size, nms_size), mode="constant")
    scores = np.where(is_peak, maps, -1.0).reshape(p, -1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    best = np.take_along_axis(scores, order, 1)
    y, x = np.divmod(order, w)
    pos = np.stack([x, y], -1).astype(np.float32)
    missing = best <= 0
    pos[missing] = ((w - 1) / 2, (h - 1) / 2)
    return pos, np.where(missing, 0.0, best).astype(np.float32)


def offset_context(
    beliefs: np.ndarray, top_k: int = 2, nms_size: int = 3, peaks: tuple | None = None
) -> np.ndarray:
    """psi_2: for every joint, its top-K peaks as offsets from z in polar form, with scores.

    ``peaks``: ``belief_peaks(beliefs, top_k, nms_size)`` if the caller has them already.
    Returns (h, w, P * K * 4): distance (in map widths), cos and sin of the angle, peak score.
    """
    h, w = beliefs.shape[1:]
    pos, score = belief_peaks(beliefs, top_k, nms_size) if peaks is None else peaks
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    dx = pos[None, None, ..., 0] - xs[..., None, None]
    dy = pos[None, None, ..., 1] - ys[..., None, None]
    dist = np.hypot(dx, dy)
    safe = np.maximum(dist, 1e-6)
    feats = np.stack(
        [dist / w, dx / safe, dy / safe, np.broadcast_to(score, dist.shape)], -1
    )  # (h, w, P, K, 4)
    return feats.reshape(h, w, -1).astype(np.float32)


def appearance_context(
    beliefs: np.ndarray, colour: np.ndarray, samples: int = 6, peak: np.ndarray | None = None
) -> np.ndarray:
    """psi_3: how the colour at z relates to the colour where each joint is believed to be.

    For every joint's top peak q: the Lab distance between z and q, and the mean Lab distance
    of the colours on the segment between them (``samples`` points, ends excluded) from z's
    and from q's colour. A hand is coloured like the face; a segment of one colour running
    from the elbow to z says that z may be the end of the forearm.

    beliefs : (P+1, h, w); colour : (h, w, 3) Lab at each location (``location_colour``);
    peak : (P, 2) each joint's top peak as (x, y), if the caller has them already.
    Returns (h, w, 3 P).
    """
    h, w = colour.shape[:2]
    if peak is None:
        peak = belief_peaks(beliefs, top_k=1)[0][:, 0]
    lab = np.moveaxis(colour, -1, 0).reshape(3, -1)  # channels first: fast sums over them
    at_peak = lab[:, (peak[:, 1] * w + peak[:, 0]).astype(np.intp)]  # (3, P)
    here = lab.reshape(3, h, w, 1)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    t = np.linspace(0, 1, samples + 2, dtype=np.float32)[1:-1, None, None, None]
    # (samples, h, w, P): cells on the segment from each peak to z
    sx = np.rint(peak[:, 0] + (xs[..., None] - peak[:, 0]) * t)
    sy = np.rint(peak[:, 1] + (ys[..., None] - peak[:, 1]) * t)
    on_segment = lab[:, (sy * w + sx).astype(np.intp)]  # (3, samples, h, w, P)
    return np.concatenate(
        [
            colour_distance(here, at_peak[:, None, None], axis=0),
            colour_distance(on_segment, here[:, None], axis=0).mean(0),
            colour_distance(on_segment, at_peak[:, None, None, None], axis=0).mean(0),
        ],
        -1,
    )


def segment_colours(
    beliefs: np.ndarray,
    colour: np.ndarray,
    segments,
    samples: int = 5,
    peak: np.ndarray | None = None,
) -> np.ndarray:
    """psi_4: the colours along body segments between believed joints, the same at every z.

    Each segment runs from the mean top peak of one group of joints to that of another (the
    head: head top to neck; the trunk: mid-shoulders to mid-hips). Which way a person faces
    decides which side is left; the colours of the face and chest against hair and back are
    the image's cue to it, and no location's neighbourhood sees them.

    ``peak``: (P, 2) each joint's top peak as (x, y), if the caller has them already.
    Returns (h, w, 3 * samples * len(segments)).
    """
    h, w = colour.shape[:2]
    if peak is None:
        peak = belief_peaks(beliefs, top_k=1)[0][:, 0]
    t = np.linspace(0, 1, samples, dtype=np.float32)[:, None]
    values = []
    for start, end in segments:
        a, b = peak[list(start)].mean(0), peak[list(end)].mean(0)
        xy = np.rint(a + (b - a) * t).astype(np.intp)
        values.append(colour[np.clip(xy[:, 1], 0, h - 1), np.clip(xy[:, 0], 0, w - 1)].ravel())
    values = np.concatenate(values)
    return np.broadcast_to(values, (h, w, len(values)))


def context_parts(
    beliefs: np.ndarray,
    cells=(1, 3, 7),
    top_k: int = 2,
    colour: np.ndarray | None = None,
    segments=(),
    segment_colour: np.ndarray | None = None,
) -> list[np.ndarray]:
    """[psi_1, psi_2] at every location, psi_3 when ``colour`` is given, and psi_4 along
    ``segments`` in ``segment_colour`` (the same Lab colours, whether psi_3 is on or not):
    (h, w, .) each. The joints' peaks are found once for all of them."""
    pos, score = belief_peaks(beliefs, max(top_k, 1))
    top = pos[:, 0]  # each joint's top peak, (P, 2) as (x, y)
    parts = [
        patch_context(beliefs, cells),
        offset_context(beliefs, top_k, peaks=(pos[:, :top_k], score[:, :top_k])),
    ]
    if colour is not None:
        parts.append(appearance_context(beliefs, colour, peak=top))
    if segments:
        parts.append(segment_colours(beliefs, segment_colour, segments, peak=top))
    return parts


def context_features(
    beliefs: np.ndarray, cells=(1, 3, 7), top_k: int = 2, colour: np.ndarray | None = None
) -> np.ndarray:
    """psi = [psi_1, psi_2] at every location, and psi_3 when ``colour`` is given:
    (h, w, D_context)."""
    return np.concatenate(context_parts(beliefs, cells, top_k, colour), -1)
