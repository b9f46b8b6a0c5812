"""`pm train`: the options every run has, then each registered backend's settings as options.

The backend options are made from the settings dataclasses' field metadata when the command
runs (not when this module is imported), so a backend registered by a plugin or a notebook
has its options too. The command checks the options and the output folder before reading any
data, then calls ``posemachines.api``: the same path as ``posemachines.train``.
"""

from __future__ import annotations

from contextlib import contextmanager

import click
from posemachines.cli.common import (
    command_line,
    data_options,
    data_request,
    friendly_errors,
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
    from posemachines.api import train_model
    from posemachines.options import RUN_OPTIONS

    o = {k: options.pop(k) for k in list(options) if k in RUN_OPTIONS}  # the rest: settings
    check_run_options(o)
    with settings_as_flags():
        trained = train_model(
            o["stack"] or o["backend"] or "forest",
            data_request(o, seed=o["seed"]),
            out=o["out"] or "auto",
            **{k: o[k] for k in ("overwrite", "resume", "seed", "dask", "on_bad_image", "folds")},
            n_jobs=o["jobs"],
            progress=True,
            command=command_line(),
            **options,
        )
    if trained.model is None:  # a torchrun rank other than 0: rank 0 saves and says so
        return
    skipped = trained.model.record.skipped_images
    if skipped:
        more = " ..." if len(skipped) > 5 else ""
        report_skipped(
            f"{len(skipped)} unreadable training image(s) skipped: {', '.join(skipped[:5])}{more}"
        )
    click.echo(f"model written to {trained.folder}")


def check_run_options(o: dict) -> None:
    """What the command line can get wrong that a Python call cannot, in its own words."""
    if o["backend"] is not None and o["stack"] is not None:
        raise PoseMachinesError("give --backend or --stack, not both")
    if o["stack"] is not None:
        from posemachines.backends.stack import parse_stack

        parse_stack(o["stack"])  # "forest" alone is a stack without its count, not a backend
    if o["resume"] and o["out"] is None:
        raise PoseMachinesError("--resume needs --out pointing at the interrupted run")
    if o["jobs"] == 0 or o["jobs"] < -1:
        raise PoseMachinesError(f"--jobs must be -1 (all cores) or at least 1, got {o['jobs']}")


@contextmanager
def settings_as_flags():
    """The library names settings; the command line names them as the flags the user typed."""
    from posemachines.api import NotASetting

    try:
        yield
    except NotASetting as exc:
        target = f"--stack {exc.backend}" if ":" in exc.backend else f"--backend {exc.backend}"
        hint = f" (it is for --backend {exc.owner})" if exc.owner else ""
        flags = ", ".join(map(setting_flag, exc.names))
        raise PoseMachinesError(f"{flags} does not apply to {target}{hint}") from None


def setting_flag(name: str) -> str:
    """The command-line spelling of a setting, as errors name it."""
    from posemachines.options import flag_of, options_of
    from posemachines.registry import backends

    for backend in backends().values():
        for field_name, how, _ in options_of(backend.settings):
            if field_name == name:
                flag = flag_of(name, how)
                return f"{flag}/{how.negative}" if how.negative else flag
    return flag_of(name)
