"""Run a trained model on one image and print how each stage moves the keypoints.

python examples/stage_by_stage.py runs/forest-1 photo.jpg
"""

from __future__ import annotations

import sys

import numpy as np

from posemachines.data import read_image
from posemachines.loading import load_model
from posemachines.people.multiperson import make_sample


def main(model_dir: str, image_path: str):
    model = load_model(model_dir)
    sample = make_sample(image_path, read_image(image_path), model.skeleton.num_joints)
    keypoints, confidence = model.predict_samples([sample])  # (T, 1, P, 2), (T, 1, P)
    for t in range(model.num_stages):
        moved = 0.0 if t == 0 else np.linalg.norm(keypoints[t] - keypoints[t - 1], axis=-1).mean()
        print(
            f"stage {t + 1}: mean confidence {confidence[t].mean():.3f}, "
            f"keypoints moved {moved:.1f} px on average"
        )
    for name, (x, y) in zip(model.skeleton.joints, keypoints[-1, 0]):
        print(f"  {name:12s} {x:7.1f} {y:7.1f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
