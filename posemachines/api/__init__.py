"""The application layer: every command's work as a function a notebook calls the same way.

import posemachines as pm

train = pm.load_dataset("synthetic", "train", size=200)
model = pm.train("forest", train, stages=2)
result = pm.evaluate(model, pm.load_dataset("synthetic", "test"))
keypoints = model.predict(["photo.jpg"]).keypoints[-1]    # (1, P, 2), last stage
model.save("runs/my-forest")

``pm`` turns its options into one call of these (``cli/``) and their results into lines; the
functions here read no command line and print nothing (what a user should know goes to the
``posemachines`` logger, see ``progress.note``).

training : ``train``/``train_model`` (``pm train``), ``plan_training``, ``run_training``
scoring  : ``evaluate`` (``pm evaluate``, ``record=True`` keeps the scores), ``dataset_of``
comparing: ``compare`` (``pm compare``), ``bench`` (``pm bench``)
exporting: ``export`` (``pm export``: ONNX, float32 or int8)
predicting: ``predict_into`` (``pm predict``)
serving  : ``serving_app``, ``serve`` (``pm serve``)
people   : ``predict_people``, ``people_source`` (``--people``/``--boxes``)
"""

from posemachines.api.comparing import bench, compare
from posemachines.api.exporting import Exported, export
from posemachines.api.people import people_source, predict_people
from posemachines.api.scoring import dataset_of, evaluate
from posemachines.api.serving import serve, serving_app
from posemachines.api.training import (
    NotASetting,
    Trained,
    TrainingPlan,
    plan_training,
    run_training,
    train,
    train_model,
)

__all__ = [
    "Exported",
    "export",
    "NotASetting",
    "Trained",
    "TrainingPlan",
    "bench",
    "compare",
    "dataset_of",
    "evaluate",
    "people_source",
    "plan_training",
    "predict_people",
    "serve",
    "serving_app",
    "run_training",
    "train",
    "train_model",
]
