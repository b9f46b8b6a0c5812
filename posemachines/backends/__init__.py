"""The registry of backends: what ``pm train --backend NAME`` and ``posemachines.train(NAME)`` find.

A backend is three things, registered together::

    register_backend("knn", settings=KNNSettings, trainer=KNNTrainer, stages={"knn": KNNStage})

settings : a frozen dataclass of everything that decides a model. Fields whose metadata holds
           an ``option(...)`` become ``pm train`` options (help, type and range from there);
           the others are reachable from Python only.
trainer  : an estimator in the scikit-learn manner. ``Trainer(settings, run)`` stores them
           (``run`` is a ``TrainingRun``: folder, seed, workers, what to do with bad images);
           ``fit(dataset, below=None, fold_of=None, out_of_fold=False)`` learns and returns
           self, with the model in ``model_``. ``below`` holds the beliefs the parts under it
           in a stack gave for every sample (``{"plain": (N, P+1, g, g)}``, plus ``"mirror"``
           when a part mirrors images), ``fold_of`` the stack's folds. A trainer whose class
           says ``gives_out_of_fold = True`` sets ``oof_beliefs_`` (the same form) when asked
           with ``out_of_fold``; for any other the stack cross-fits it.
stages   : the stage classes its models are made of, by the kind a manifest names them with
           (see ``posemachines.stage`` for the contract).

A class may be given as ``"module:Name"``, imported on first use, so that listing the
backends (``pm train --help``) does not import torch. Built-in backends register here;
other packages register through the ``posemachines.backends`` entry-point group (an entry
point names a module whose import registers), or by calling ``register_backend`` at import.
"""

# The built-in backends (each package's __init__ registers it without importing its trainer).
from . import cnn, forest, mean, people  # noqa: E402, F401, I001
from .registry import (
    Backend,
    Option,
    TrainingRun,
    backends,
    check_ranges,
    field_names,
    flag_of,
    get_backend,
    option,
    options_of,
    register_backend,
    stack_settings,
    stage_class,
    unregister_backend,
)

__all__ = [
    "Backend",
    "Option",
    "TrainingRun",
    "backends",
    "check_ranges",
    "field_names",
    "flag_of",
    "get_backend",
    "option",
    "options_of",
    "register_backend",
    "stack_settings",
    "stage_class",
    "unregister_backend",
]
