"""The registry of backends: what ``pm train --backend NAME`` and ``posemachines.train(NAME)`` find.

A backend is three things, registered together::

    register_backend("knn", settings=KNNSettings, trainer=KNNTrainer, stages={"knn": KNNStage})

settings : a frozen dataclass of everything that decides a model. Fields whose metadata holds
           an ``option(...)`` (``posemachines.options``) become ``pm train`` options; the others
           are reachable from Python only.
trainer  : an estimator in the scikit-learn manner. ``Trainer(settings, run)`` stores them
           (``run`` is a ``TrainingRun``: folder, seed, workers, what to do with bad images);
           ``fit(dataset, below=None, fold_of=None, out_of_fold=False)`` learns and returns
           self, with the model in ``model_``. ``below`` holds the beliefs the parts under it
           in a stack gave for every sample (``{"plain": (N, P+1, g, g)}``, plus ``"mirror"``
           when a part mirrors images), ``fold_of`` the stack's folds. A trainer whose class
           says ``gives_out_of_fold = True`` sets ``oof_beliefs_`` (the same form) when asked
           with ``out_of_fold``; for any other the stack cross-fits it.
stages   : the stage classes its models are made of, by the kind a manifest names them with
           (see ``posemachines.core.stage`` for the contract).

The built-in backends are the plain table ``BUILT_IN`` below. A class may be given as
``"module:Name"``, imported on first use, so that listing the backends (``pm train --help``)
does not import torch, and so that this module imports no backend. Other packages register
through the ``posemachines.backends`` entry-point group (an entry point names a module whose
import registers), or by calling ``register_backend``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posemachines.errors import PoseMachinesError
from posemachines.options import RUN_OPTIONS, check_ranges, field_names, options_of
from posemachines.plugins import load_entry_points, resolve

_B = "posemachines.backends"
BUILT_IN: dict[str, dict] = {
    "mean": dict(
        settings=f"{_B}.mean.settings:MeanSettings",
        trainer=f"{_B}.mean.trainer:MeanTrainer",
        stages={"mean": f"{_B}.mean.stage:MeanPoseStage"},
        summary="mean-pose prior",
    ),
    "forest": dict(
        settings=f"{_B}.forest.settings:ForestSettings",
        trainer=f"{_B}.forest.trainer:ForestTrainer",
        stages={"forest": f"{_B}.forest.stage:ForestStage"},
        summary="the 2014 Pose Machine (random forests)",
    ),
    "cnn": dict(
        settings=f"{_B}.cnn.settings:CNNSettings",
        trainer=f"{_B}.cnn.trainer:CNNTrainer",
        stages={"cnn": f"{_B}.cnn.stage:CPMStage"},
        summary="the 2016 Convolutional Pose Machine",
        figures=f"{_B}.cnn.figures:report_figures",
    ),
    "people": dict(
        settings=f"{_B}.people.settings:PeopleSettings",
        trainer=f"{_B}.people.trainer:PeopleTrainer",
        stages={},
        summary="finds people (centres and boxes) for multi-person prediction",
    ),
}


@dataclass(frozen=True)
class TrainingRun:
    """What every trainer is given besides its settings."""

    out_dir: Path
    seed: int = 0
    n_jobs: int = -1
    progress: bool = False
    on_bad_image: str = "skip"
    resume: bool = False

    def log(self, message: str) -> None:
        if self.progress:
            from posemachines.progress import say

            say(message)


@dataclass(frozen=True)
class Backend:
    name: str
    settings: type
    trainer: type | str
    stages: dict = field(default_factory=dict)
    summary: str = ""
    # What a comparison report shows of its models beyond the scores: a function
    # (model, folder, pck_by_joint_and_stage, skeleton) -> {name: figure data}, or None.
    figures: Callable | str | None = None

    def trainer_class(self) -> type:
        return resolve(self.trainer)

    def make_settings(self, **options) -> Any:
        """Settings from options (None = the default), every range and the backend's own
        checks applied."""
        known = field_names(self.settings)
        unknown = sorted(set(options) - known)
        if unknown:
            raise PoseMachinesError(
                f"{', '.join(unknown)}: not a setting of the {self.name} backend "
                f"(its settings: {', '.join(sorted(known))})"
            )
        given = {k: v for k, v in options.items() if v is not None}
        build = getattr(self.settings, "from_options", None)
        settings = build(**given) if build is not None else self.settings(**given)
        check_ranges(settings)
        if hasattr(settings, "validate"):
            settings.validate()
        return settings


_BACKENDS: dict[str, Backend] = {}
_LOADED = False


def register_backend(
    name: str,
    *,
    settings: type | str,
    trainer: type | str,
    stages: dict,
    summary: str = "",
    figures: Callable | str | None = None,
) -> Backend:
    """Make ``name`` a backend (see the module's docstring); returns its record. Registering a
    name again replaces it (a notebook re-running its cell)."""
    backends()  # the built-in ones and the plugins first, so that a clash is seen
    if not name.isidentifier():
        raise PoseMachinesError(f"a backend name must be a plain word, not {name!r}")
    owner = {kind: b.name for b in _BACKENDS.values() for kind in b.stages if b.name != name}
    clash = [kind for kind in stages if kind in owner]
    if clash:
        raise PoseMachinesError(f"stage kind {clash[0]!r} belongs to backend {owner[clash[0]]!r}")
    settings = resolve(settings)
    taken = sorted({n for n, _, _ in options_of(settings)} & RUN_OPTIONS)
    if taken:
        raise PoseMachinesError(
            f"backend {name!r}: the setting {taken[0]!r} cannot be an option, `pm train` has its "
            "own; give it another name"
        )
    backend = Backend(name, settings, trainer, dict(stages), summary, figures)
    _BACKENDS[name] = backend
    return backend


def unregister_backend(name: str) -> None:
    """Forget a backend (models made of its stages no longer load)."""
    _BACKENDS.pop(name, None)


def backends() -> dict[str, Backend]:
    """Every registered backend by name, plugins included."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for name, parts in BUILT_IN.items():
            if name not in _BACKENDS:  # a notebook may have replaced a built-in one already
                register_backend(name, **parts)
        load_entry_points("posemachines.backends")
    return dict(_BACKENDS)


def get_backend(name: str) -> Backend:
    known = backends()
    if name not in known:
        raise PoseMachinesError(f"unknown backend {name!r}; use one of {', '.join(known)}")
    return known[name]


def stage_class(kind: str) -> type:
    """The class of the stages a manifest calls ``kind``."""
    for backend in backends().values():
        if kind in backend.stages:
            return resolve(backend.stages[kind])
    kinds = sorted(k for b in backends().values() for k in b.stages)
    raise PoseMachinesError(
        f"unknown stage kind {kind!r} (known: {', '.join(kinds)}); is the package that "
        "registers it installed?"
    )
