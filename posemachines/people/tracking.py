"""People's ids from frame to frame: each person of a frame takes the id of the person of the
previous frame whose box overlaps it most (greedy, best pairs first, as simple pose trackers
do), or a new id."""

from __future__ import annotations

import numpy as np

from posemachines.people.boxes import box_iou

MIN_IOU = 0.3  # less overlap than this between frames is someone else


class Tracker:
    """``update(people)`` sets ``track_id`` on each person of the next frame."""

    def __init__(self, min_iou: float = MIN_IOU):
        self.min_iou = min_iou
        self.previous: list = []
        self.next_id = 0

    def update(self, people: list) -> list:
        ids = [None] * len(people)
        if people and self.previous:
            overlap = box_iou(
                np.array([p.box for p in people]), np.array([q.box for q in self.previous])
            )
            taken = set()
            for flat in np.argsort(-overlap, axis=None, kind="mergesort"):
                i, j = np.unravel_index(flat, overlap.shape)
                if overlap[i, j] < self.min_iou:
                    break
                if ids[i] is None and j not in taken:
                    ids[i] = self.previous[j].track_id
                    taken.add(j)
        for i, person in enumerate(people):
            if ids[i] is None:
                ids[i], self.next_id = self.next_id, self.next_id + 1
            person.track_id = ids[i]
        self.previous = list(people)
        return people
