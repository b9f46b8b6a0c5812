"""`pm train`: the options every run has, then each registered backend's settings as options.

The backend options are made from the settings dataclasses' field metadata when the command
runs (not when this module is imported), so a backend registered by a plugin or a notebook
has its options too. The command checks the options and the output folder before reading any
data, then calls ``posemachines.api``: the same path as ``posemachines.train``.
"""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import nullcontext
from pathlib import Path

import click
from posemachines.cli.common import (
    data_options,
    echo_err,
    friendly_errors,
    load_data,
    report_skipped,
)

from posemachines.errors import PoseMachinesError


class TrainCommand(click.Command):
    """A click command whose parameters include every registered backend's settings."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        backend, *settings = backend_parameters()
        return [backend] + params[:-1] + settings + params[-1:]  # --help stays last


def backend_parameters() -> list[click.Option]:
    """``--backend`` and one option per settings field that has an ``option(...)``, shared by
    the backends that have a field of that name (the help says which)."""
    from posemachines.options import options_of
    from posemachines.registry import backends

    known = backends()
    names = ", ".join(f"{name}: {b.summary}" for name, b in known.items() if b.summary)
    params = [
        click.Option(
            ["--backend"],
            type=click.Choice(list(known)),
            default=None,
            help=f"{names}. Default: forest. A pure stack: --backend cnn is --stack cnn:T.",
        )
    ]
    helps: dict[str, dict[str, list[str]]] = {}  # option -> its help -> the backends saying it
    specs = {}
    for backend in known.values():
        for name, how, _ in options_of(backend.settings):
            helps.setdefault(name, {}).setdefault(how.help, []).append(backend.name)
            specs.setdefault(name, (backend.settings, how))
    for name, (settings, how) in specs.items():
        text = " ".join(f"[{', '.join(owners)}] {h}" for h, owners in helps[name].items())
        params.append(_option(name, settings, how, text))
    return params


def _option(name: str, settings: type, how, help_text: str) -> click.Option:
    from dataclasses import fields

    from posemachines.options import flag_of

    annotation = next(f.type for f in fields(settings) if f.name == name)
    # "int | None" under postponed annotations, the class itself otherwise
    annotation = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    flag = flag_of(name, how)
    if "bool" in annotation:
        if how.negative:
            return click.Option([f"{flag}/{how.negative}", name], default=None, help=help_text)
        return click.Option([flag, name], default=None, is_flag=True, help=help_text)
    kind = how.type
    if how.choices is not None:
        kind = click.Choice([str(c) for c in how.choices])
    elif kind is None:
        kind = int if annotation.startswith("int") else float if "float" in annotation else str
    return click.Option([flag, name], type=kind, default=None, help=help_text, metavar=how.metavar)


GENERIC = (
    "backend stack folds dataset split images data_root synthetic_size protocol on_bad_image "
    "on_bad_annotation out seed jobs dask resume overwrite"
).split()


@click.command(cls=TrainCommand)
@click.option(
    "--stack",
    default=None,
    help="Stages of several kinds, bottom-up, e.g. cnn:1,forest:2 (a CPM stage 1, two forest "
    "stages on its beliefs) or forest:1,cnn:2. Each part above the first learns from the "
    "out-of-fold beliefs of the parts below (--folds).",
)
@click.option(
    "--folds",
    type=int,
    default=None,
    help="Folds of the stacking: the forest's own stages (default 2) and a --stack's parts "
    "(default 3).",
)
@data_options(default_split="train")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Model directory to write (default: a new runs/BACKEND-N).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option(
    "--jobs",
    type=int,
    default=-1,
    show_default=True,
    help="CPU workers for feature extraction and forest fitting (-1 = all cores).",
)
@click.option(
    "--dask",
    "dask",
    metavar="ADDRESS",
    envvar="POSEMACHINES_DASK",
    default=None,
    help="Send feature extraction and tree fitting to this dask.distributed scheduler "
    "(e.g. tcp://HOST:8786; else $POSEMACHINES_DASK); the model is the same as a local one.",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Write into a --out folder that is not empty; only the model's files are replaced.",
)
@friendly_errors
def train(**options):
    """Train a model and write it as a model directory.

    Without --dataset, trains on LSP (train split) when a data root holds it, otherwise on the
    synthetic set, and says which. --out must be new, empty, or (with --resume) the
    interrupted run; --overwrite writes into any folder, replacing only the model's files.
    """
    from posemachines.api import plan_training, run_training
    from posemachines.core.model import PoseModel
    from posemachines.files.model_dir import save_model
    from posemachines.files.runs import check_output_folder, output_folder
    from posemachines.parallel import dask_backend
    from posemachines.registry import TrainingRun

    o = {k: options.pop(k) for k in GENERIC}  # what is left: the backends' settings
    if o["backend"] is not None and o["stack"] is not None:
        raise PoseMachinesError("give --backend or --stack, not both")
    if o["stack"] is not None:
        from posemachines.backends.stack import parse_stack

        parse_stack(o["stack"])  # "forest" alone is a stack without its count, not a backend
    name = o["stack"] or o["backend"] or "forest"
    plan = plan_training(name, folds=o["folds"], seed=o["seed"], **options)
    out, resume = o["out"], o["resume"]
    if resume and out is None:
        raise PoseMachinesError("--resume needs --out pointing at the interrupted run")
    if o["jobs"] == 0 or o["jobs"] < -1:
        raise PoseMachinesError(f"--jobs must be -1 (all cores) or at least 1, got {o['jobs']}")
    if o["synthetic_size"] is not None and o["synthetic_size"] < 1:
        raise PoseMachinesError(f"--synthetic-size must be at least 1, got {o['synthetic_size']}")
    dask = o["dask"]
    if dask and plan.trains_on_device:
        echo_err(f"not using the dask scheduler {dask}: a CNN trains on --device")
        dask = None
    # Under torchrun rank 0 checks, locks and writes the folder; the other ranks write nothing
    # there (they wait for it to exist).
    follower = int(os.environ.get("RANK", "0")) > 0
    overwrite = o["overwrite"] or resume
    if out is not None and not follower:
        check_output_folder(out, "train", overwrite, reuse=False)
    data = _training_data(plan, o)
    prefix = "hybrid" if plan.is_stack else name
    folder = (
        nullcontext(Path(out))
        if follower and out is not None
        else output_folder(out, "train", prefix=prefix, overwrite=overwrite, reuse=False)
    )
    with dask_backend(dask or None), folder as out_dir:
        run = TrainingRun(Path(out_dir), o["seed"], o["jobs"], True, o["on_bad_image"], resume)
        model = run_training(plan, data, run)
        if model is None:  # a non-zero rank under torchrun: rank 0 writes
            return
        model.record.command = " ".join(["pm"] + sys.argv[1:])
        if isinstance(model, PoseModel):
            save_model(model, out_dir)
        else:  # a model of its own kind (the people model) writes its own folder
            model.save(out_dir)
        if not plan.keeps_checkpoint():
            shutil.rmtree(Path(out_dir) / "checkpoint", ignore_errors=True)
    skipped = model.record.skipped_images
    if skipped:
        report_skipped(
            f"{len(skipped)} unreadable training image(s) skipped: {', '.join(skipped[:5])}"
            + (" ..." if len(skipped) > 5 else "")
        )
    click.echo(f"model written to {out_dir}")


def _training_data(plan, o: dict):
    """The dataset the options name (the default training set when none), or None for a CNN
    trained from a pack."""
    from posemachines.data import default_training_dataset

    if any(getattr(s, "packed", None) for s in plan.settings.values()):
        if o["dataset"] is not None:
            raise PoseMachinesError("give --dataset or --data (a pack), not both")
        return None
    dataset = o["dataset"]
    if dataset is None:
        dataset, why = default_training_dataset(o["data_root"])
        echo_err(f"training on {dataset} ({why})")
    return load_data(
        dataset,
        o["split"],
        o["data_root"],
        o["synthetic_size"],
        o["protocol"],
        o["seed"],
        images=o["images"],
        on_bad_annotation=o["on_bad_annotation"],
    )
