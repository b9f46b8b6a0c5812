"""Training: a plan checked before any data is read, then one run, owned folder and all.

``pm train`` and ``posemachines.train`` are this one path: the command turns its options into
one ``train`` call, and a notebook calls the same function."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

from posemachines.core.model import PoseModel
from posemachines.data import DataRequest, PoseDataset
from posemachines.errors import PoseMachinesError
from posemachines.files.model_dir import save_model
from posemachines.files.runs import check_output_folder, output_folder
from posemachines.options import field_names
from posemachines.parallel import dask_backend
from posemachines.progress import note
from posemachines.registry import TrainingRun, backends, get_backend


class NotASetting(PoseMachinesError):
    """Settings that no part of a plan uses: their names, the backend or stack, and the one
    backend they belong to when there is one (the command line re-spells them as flags)."""

    def __init__(self, names: list[str], backend: str, owner: str | None = None):
        self.names, self.backend, self.owner = names, backend, owner
        target = f"the stack {backend}" if ":" in backend else f"the {backend} backend"
        hint = f" (a setting of the {owner} backend)" if owner else ""
        super().__init__(f"{', '.join(names)} does not apply to {target}{hint}")


@dataclass(frozen=True)
class TrainingPlan:
    """What ``train`` will do, checked before any data is read: the backend (a registered
    name, or a stack such as ``"cnn:1,forest:2"``), the settings of each backend it uses, and
    a stack's folds."""

    backend: str
    settings: dict
    folds: int | None = None

    @property
    def is_stack(self) -> bool:
        return ":" in self.backend

    @property
    def trains_on_device(self) -> bool:
        """Only networks, which train on their device (a dask scheduler has nothing to do)."""
        classes = [get_backend(name).trainer_class() for name in self.settings]
        return all(getattr(c, "trains_on_device", False) for c in classes)

    @property
    def packed(self) -> bool:
        """Whether it trains from a pack of crops rather than a dataset."""
        return any(getattr(s, "packed", None) for s in self.settings.values())

    def keeps_checkpoint(self) -> bool:
        """Whether ``OUT/checkpoint`` is worth keeping once the model is saved."""
        if self.is_stack:
            return False
        return getattr(get_backend(self.backend).trainer_class(), "keeps_checkpoint", False)


def plan_training(backend: str, *, folds: int | None = None, seed: int = 0, **options):
    """Check ``options`` against the settings of ``backend`` (or of every kind of part of a
    stack) and build those settings; a setting no part uses is an error naming it."""
    stack = ":" in backend
    if stack:
        from posemachines.backends.stack import parse_stack

        kinds = list(dict.fromkeys(part.kind for part in parse_stack(backend)))
        if options.get("stages") is not None:  # each part of the stack counts its own
            raise NotASetting(["stages"], backend)
    else:
        kinds = [get_backend(backend).name]
    given = {k: v for k, v in options.items() if v is not None}
    fields_of = {kind: field_names(get_backend(kind).settings) for kind in kinds}
    if folds is not None and not stack:
        if "folds" not in fields_of[backend]:
            raise NotASetting(["folds"], backend)
        given["folds"] = folds
    if folds is not None and folds < (1 if stack else 2):
        raise PoseMachinesError(
            f"folds must be at least 2 (or 1 for a stack without cross-fitting), got {folds}"
        )
    unused = [k for k in given if not any(k in names for names in fields_of.values())]
    if unused:
        owners = [n for n, b in backends().items() if set(unused) <= field_names(b.settings)]
        raise NotASetting(unused, backend, owners[0] if len(owners) == 1 else None)
    settings = {}
    for kind in kinds:
        mine = {k: v for k, v in given.items() if k in fields_of[kind]}
        if "seed" in fields_of[kind]:
            mine.setdefault("seed", seed)
        settings[kind] = get_backend(kind).make_settings(**mine)
    plan = TrainingPlan(backend, settings, (folds or 3) if stack else None)
    if stack and plan.packed:
        raise PoseMachinesError("a stack trains from a dataset, not from a pack of crops")
    return plan


def run_training(plan: TrainingPlan, dataset: PoseDataset | None, run: TrainingRun):
    """Train what ``plan`` says on ``dataset`` in ``run.out_dir``; the model (None on a
    ``torchrun`` rank other than 0)."""
    if run.resume and not (run.out_dir / "checkpoint").exists():
        run.log(f"nothing to resume in {run.out_dir} (no checkpoint): training from the start")
        run = replace(run, resume=False)
    if plan.is_stack:
        from posemachines.backends.stack import train_stack

        return train_stack(dataset, plan.backend, plan.settings, run, plan.folds)
    trainer = get_backend(plan.backend).trainer_class()(plan.settings[plan.backend], run)
    return trainer.fit(dataset).model_


def training_data(plan: TrainingPlan, dataset) -> PoseDataset | None:
    """The dataset to train on: ``dataset`` itself when loaded, else what a ``DataRequest``
    names (the default training set when it names none, said in a note); None for a plan that
    trains from a pack."""
    if plan.packed:
        if dataset is not None and not (isinstance(dataset, DataRequest) and dataset.name is None):
            raise PoseMachinesError("give a dataset or a pack of crops (data), not both")
        return None
    if isinstance(dataset, PoseDataset):
        return dataset
    request = dataset if isinstance(dataset, DataRequest) else DataRequest(dataset)
    if request.name is None:
        from posemachines.data import default_training_dataset

        name, why = default_training_dataset(request.data_root)
        note(f"training on {name} ({why})")
        request = replace(request, name=name)
    return request.load()


@dataclass(frozen=True)
class Trained:
    """A training's outcome: the model (None on a ``torchrun`` rank other than 0, whose rank 0
    saves) and the folder it was saved in (None when no ``out`` was given)."""

    model: PoseModel | None
    folder: Path | None


def train(backend: str, dataset=None, **how) -> PoseModel:
    """Train a model of ``backend`` on ``dataset``: what ``pm train`` runs (see
    ``train_model`` for the options). The model, saved in ``out`` when one is given."""
    return train_model(backend, dataset, **how).model


def train_model(
    backend: str,
    dataset: PoseDataset | DataRequest | str | None = None,
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    seed: int = 0,
    n_jobs: int = -1,
    dask: str | None = None,
    progress: bool = False,
    on_bad_image: str = "skip",
    folds: int | None = None,
    command: str | None = None,
    runs_root: str | Path = "runs",
    **options,
) -> Trained:
    """Train a model of ``backend`` on ``dataset`` as ``pm train`` does.

    ``backend`` is a registered backend ("mean", "forest", "cnn", or a plugin's) or a stack,
    bottom-up, such as ``"cnn:1,forest:2"``. ``dataset`` is a loaded dataset, a name (its
    train split), a ``DataRequest``, or None for the default training set (LSP when the data
    root holds it, else the synthetic set). ``options`` are the backend's settings (the fields
    of ``ForestSettings``, ``CNNSettings``, ...: ``stages=2, trees=20`` or
    ``config="cpm-small", epochs=5``); one the backend does not use is an error. ``folds`` is a
    stack's (or a forest's own) number of folds.

    With ``out`` the run owns that folder as ``pm train`` does: it must be new or empty (or
    ``overwrite``; ``resume`` continues an interrupted run there), the checkpoints go there
    and the model is saved there (``out="auto"``: a new ``runs_root/BACKEND-N``). Without it
    the run works in a temporary folder and the model is returned unsaved. ``dask`` sends a
    forest's work to that scheduler. ``command`` is recorded as what made the model.
    """
    plan = plan_training(backend, folds=folds, seed=seed, **options)
    if resume and out is None:
        raise PoseMachinesError("resume needs out: the folder of the interrupted run")
    if n_jobs == 0 or n_jobs < -1:
        raise PoseMachinesError(f"n_jobs must be -1 (all cores) or at least 1, got {n_jobs}")
    if dask and plan.trains_on_device:
        note(f"not using the dask scheduler {dask}: a network trains on its device")
        dask = None
    run = TrainingRun(Path("."), seed, n_jobs, progress, on_bad_image, resume)
    if out is None:
        data = training_data(plan, dataset)
        with tempfile.TemporaryDirectory(prefix="posemachines-") as tmp, dask_backend(dask):
            return Trained(run_training(plan, data, replace(run, out_dir=Path(tmp))), None)
    out = None if out == "auto" else Path(out)
    # Under torchrun rank 0 checks, locks and writes the folder; the other ranks write nothing
    # there (they wait for it to exist).
    follower = int(os.environ.get("RANK", "0")) > 0
    overwrite = overwrite or resume
    if out is not None and not follower:
        check_output_folder(out, "train", overwrite, reuse=False)
    data = training_data(plan, dataset)
    folder = (
        nullcontext(out)
        if follower and out is not None
        else output_folder(
            out,
            "train",
            prefix="hybrid" if plan.is_stack else plan.backend,
            overwrite=overwrite,
            reuse=False,
            runs_root=runs_root,
        )
    )
    with dask_backend(dask), folder as out_dir:
        model = run_training(plan, data, replace(run, out_dir=Path(out_dir)))
        if model is not None:
            _save(model, plan, Path(out_dir), command)
    return Trained(model, Path(out_dir))


def _save(model, plan: TrainingPlan, folder: Path, command: str | None) -> None:
    model.record.command = command or f"posemachines.train({plan.backend!r}, ...)"
    if isinstance(model, PoseModel):
        save_model(model, folder)
    else:  # a model of its own kind (the people model) writes its own folder
        model.save(folder)
    if not plan.keeps_checkpoint():
        shutil.rmtree(folder / "checkpoint", ignore_errors=True)
