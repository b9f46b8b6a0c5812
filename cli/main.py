"""``pm``: train, evaluate, predict, compare and benchmark pose machines.

Thin click commands: they parse options, call the library and print. Errors in the user's
input are reported as one line (``Error: ...``), never as a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from contextlib import nullcontext
from pathlib import Path

import click
import numpy as np

from posemachines.errors import PoseMachinesError

from .common import (
    BACKENDS,
    data_options,
    device_name,
    device_option,
    echo_err,
    friendly_errors,
    load_data,
    make_tta,
    report_skipped,
    tta_options,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="posemachines")
def cli():
    """Pose Machines (random forests, 2014) and Convolutional Pose Machines (2016).

    Train with `pm train --backend forest|cnn|mean`, score with `pm evaluate`, run on your own
    images with `pm predict`, put models side by side with `pm compare`. Everything runs on the
    built-in synthetic data with no download; `pm data` shows which real datasets were found.
    """


# -- train ---------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default=None,
    help="mean: mean-pose prior; forest: the 2014 Pose Machine (the default); cnn: the 2016 "
    "CPM. A pure stack: --backend cnn is --stack cnn:T.",
)
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
    "--stages", type=int, default=None, help="Number of stages (forest 3, cnn: the config's)."
)
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
    help="[forest] Send feature extraction and tree fitting to this dask.distributed scheduler "
    "(e.g. tcp://HOST:8786; else $POSEMACHINES_DASK); the model is the same as a local one.",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Write into a --out folder that is not empty; only the model's files are replaced.",
)
@click.option("--trees", type=int, default=None, help="[forest] Trees per stage.")
@click.option(
    "--depth", type=int, default=None, help="[forest] Maximum tree depth (default: none)."
)
@click.option(
    "--min-samples-leaf", type=int, default=None, help="[forest] Smallest leaf of a tree."
)
@click.option(
    "--max-features",
    default=None,
    help="[forest] Features tried at each split: a share of them (default 0.1), 'sqrt' or 'log2'.",
)
@click.option(
    "--mirror/--no-mirror",
    default=None,
    help="[forest] Also train on mirrored images (default: yes for real data, no for synthetic).",
)
@click.option(
    "--fold-forests/--refit",
    default=None,
    help="[forest] Keep each stage's out-of-fold forests, joined (folds x trees trees), as its "
    "forest instead of fitting it again on all images (default: --refit).",
)
@click.option(
    "--hard-negatives",
    type=float,
    default=None,
    help="[forest] Share of each image's background locations that stages after the first take "
    "where the stage before believed most, away from every joint (default 0).",
)
@click.option(
    "--segment-colours/--no-segment-colours",
    default=None,
    help="[forest] Give every location the colours along the believed head and trunk, which "
    "show which way the person faces (default: no).",
)
@click.option(
    "--hierarchy",
    is_flag=True,
    default=None,
    help="[forest] Add the part hierarchy: limb and whole-body beliefs feed the joint level.",
)
@click.option(
    "--init",
    "init_model",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="[forest] Train forest stages on top of this model's stages (hybrid).",
)
@click.option(
    "--init-stages",
    type=int,
    default=1,
    show_default=True,
    help="[forest] How many stages of --init to keep below the forest stages.",
)
@click.option(
    "--config",
    "cnn_config",
    default=None,
    help="[cnn] cpm-gpu (256 px, 4 stages, BatchNorm), cpm-paper (the paper's network: 368 px, "
    "6 stages, no normalisation), cpm-small (128 px) or cpm-tiny. "
    "Default: cpm-gpu on CUDA, cpm-small on CPU.",
)
@click.option(
    "--epochs", type=int, default=None, help="[cnn] Training epochs (default 40; or --time-budget)."
)
@click.option(
    "--time-budget",
    type=float,
    default=None,
    help="[cnn] Minutes for the whole run instead of --epochs: the number of steps follows from "
    "the speed of the first steps, and the learning-rate schedule, the validations and the "
    "final save fit in the budget.",
)
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="[cnn] Batch size (default: 128 for cpm-gpu, 32 for cpm-paper, else 16).",
)
@click.option(
    "--lr",
    type=float,
    default=None,
    help="[cnn] Peak learning rate. Default: AdamW 3e-3 for BatchNorm networks (cpm-small), "
    "else 1e-3; SGD 1e-2.",
)
@click.option(
    "--optimizer",
    type=click.Choice(["adamw", "sgd"]),
    default="adamw",
    show_default=True,
    help="[cnn] AdamW with warm-up and cosine decay, or the "
    "paper's SGD with momentum and step decay.",
)
@click.option("--device", default="auto", show_default=True, help="[cnn] cpu, cuda or auto.")
@click.option(
    "--data",
    "packed",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="[cnn] Train from a cache written by `pm data pack`.",
)
@click.option(
    "--checkpoint-every",
    type=int,
    default=None,
    help="[cnn] Steps between checkpoints (default 200; with --time-budget a tenth of the run).",
)
@click.option(
    "--supervision",
    type=click.Choice(["all", "final"]),
    default=None,
    help="[cnn] A loss at every stage (all, the paper's intermediate supervision; the "
    "default) or at the last stage only (final).",
)
@click.option(
    "--grad-every",
    type=int,
    default=None,
    help="[cnn] Every N steps, summarise the gradient magnitudes of each stage into the "
    "training log (off by default).",
)
@click.option(
    "--val-fraction",
    type=float,
    default=0.05,
    show_default=True,
    help="[cnn] Share of the training data held out for validation PCK.",
)
@friendly_errors
def train(
    backend,
    stack,
    folds,
    dataset,
    split,
    images,
    data_root,
    synthetic_size,
    protocol,
    on_bad_image,
    on_bad_annotation,
    out,
    seed,
    stages,
    jobs,
    dask,
    resume,
    overwrite,
    trees,
    depth,
    min_samples_leaf,
    max_features,
    mirror,
    fold_forests,
    hard_negatives,
    segment_colours,
    hierarchy,
    init_model,
    init_stages,
    cnn_config,
    epochs,
    time_budget,
    batch_size,
    lr,
    optimizer,
    device,
    packed,
    checkpoint_every,
    supervision,
    grad_every,
    val_fraction,
):
    """Train a model and write it as a model directory.

    Without --dataset, trains on LSP (train split) when a data root holds it, otherwise on the
    synthetic set, and says which. --out must be new, empty, or (with --resume) the
    interrupted run; --overwrite writes into any folder, replacing only the model's files.
    """
    from posemachines.data import default_training_dataset
    from posemachines.io import save_model
    from posemachines.parallel import dask_backend
    from posemachines.runs import check_output_folder, output_folder

    given = {
        "--trees": trees,
        "--depth": depth,
        "--min-samples-leaf": min_samples_leaf,
        "--max-features": max_features,
        "--mirror/--no-mirror": mirror,
        "--fold-forests/--refit": fold_forests,
        "--hard-negatives": hard_negatives,
        "--segment-colours/--no-segment-colours": segment_colours,
        "--hierarchy": hierarchy,
        "--init": init_model,
        "--config": cnn_config,
        "--epochs": epochs,
        "--time-budget": time_budget,
        "--batch-size": batch_size,
        "--lr": lr,
        "--data": packed,
        "--checkpoint-every": checkpoint_every,
        "--supervision": supervision,
        "--grad-every": grad_every,
        "--stages": stages,
    }
    if backend is not None and stack is not None:
        raise PoseMachinesError("give --backend or --stack, not both")
    if stack is not None:
        from posemachines.training.stack import parse_stack

        parse_stack(stack)
        if packed is not None:
            raise PoseMachinesError("--stack trains from a dataset, not a --data pack")
    backend = backend or ("hybrid" if stack else "forest")
    if folds is not None and backend not in ("forest", "hybrid"):
        raise PoseMachinesError("--folds applies to forests and stacks")
    if folds is not None and folds < (1 if backend == "hybrid" else 2):
        raise PoseMachinesError(
            f"--folds must be at least 2 (or 1 for a stack without cross-fitting), got {folds}"
        )
    check_backend_options(backend, given)
    if resume and out is None:
        raise PoseMachinesError("--resume needs --out pointing at the interrupted run")
    if jobs == 0 or jobs < -1:
        raise PoseMachinesError(f"--jobs must be -1 (all cores) or at least 1, got {jobs}")
    if dask and backend == "cnn":
        echo_err(f"not using the dask scheduler {dask}: a CNN trains on --device")
        dask = None
    if synthetic_size is not None and synthetic_size < 1:
        raise PoseMachinesError(f"--synthetic-size must be at least 1, got {synthetic_size}")
    # Settings and the output folder are checked before any data is read.
    if backend in ("forest", "hybrid"):
        from posemachines.training.forest import ForestSettings, train_forest

        settings = forest_settings = ForestSettings.from_options(
            stages=stages,
            trees=trees,
            depth=depth,
            min_samples_leaf=min_samples_leaf,
            max_features=_max_features(max_features),
            mirror=mirror,
            fold_forests=fold_forests,
            hard_negatives=hard_negatives,
            segment_colours=segment_colours,
            hierarchy=hierarchy,
            folds=folds if backend == "forest" else None,
        )
        settings.validate()
    if backend in ("cnn", "hybrid"):
        from posemachines.training.cnn import CNNSettings, train_cnn

        settings = cnn_settings = CNNSettings.from_options(
            config=cnn_config,
            stages=stages,
            epochs=epochs,
            time_budget=time_budget,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer,
            device=device,
            checkpoint_every=checkpoint_every,
            supervision=supervision,
            grad_every=grad_every,
            val_fraction=val_fraction,
            seed=seed,
        )
    # Under torchrun rank 0 checks, locks and writes the folder; the other ranks write nothing
    # there (they wait for it to exist).
    follower = int(os.environ.get("RANK", "0")) > 0
    overwrite = overwrite or resume
    if out is not None and not follower:
        check_output_folder(out, "train", overwrite, reuse=False)
    if packed is None and dataset is None:
        dataset, why = default_training_dataset(data_root)
        echo_err(f"training on {dataset} ({why})")
    train_data = None
    if packed is None:
        train_data = load_data(
            dataset,
            split,
            data_root,
            synthetic_size,
            protocol,
            seed,
            images=images,
            on_bad_annotation=on_bad_annotation,
        )
    folder = (
        nullcontext(Path(out))
        if follower and out is not None
        else output_folder(out, "train", prefix=backend, overwrite=overwrite, reuse=False)
    )
    with dask_backend(dask or None), folder as out_dir:
        if stack is not None:
            from posemachines.training.stack import train_stack

            model = train_stack(
                train_data,
                stack,
                forest_settings,
                cnn_settings,
                out_dir,
                folds=folds or 3,
                seed=seed,
                n_jobs=jobs,
                progress=True,
                on_bad_image=on_bad_image,
                resume=resume,
            )
        elif backend == "mean":
            from posemachines.training.mean import train_mean

            model = train_mean(train_data, n_jobs=jobs, on_bad_image=on_bad_image, progress=True)
        elif backend == "forest":
            model = train_forest(
                train_data,
                settings,
                out_dir,
                seed=seed,
                n_jobs=jobs,
                resume=resume,
                init_model=init_model,
                init_stages=init_stages,
                on_bad_image=on_bad_image,
                progress=True,
            )
        else:
            model = train_cnn(
                train_data,
                settings,
                out_dir,
                packed=packed,
                resume=resume,
                progress=True,
                on_bad_image=on_bad_image,
            )
            if model is None:  # a non-zero rank under torchrun: rank 0 writes
                return
        model.record.command = " ".join(["pm"] + sys.argv[1:])
        save_model(model, out_dir)
        if backend == "forest":  # a finished forest's checkpoint only repeats the model
            shutil.rmtree(Path(out_dir) / "checkpoint", ignore_errors=True)
    skipped = model.record.skipped_images
    if skipped:
        report_skipped(
            f"{len(skipped)} unreadable training image(s) skipped: {', '.join(skipped[:5])}"
            + (" ..." if len(skipped) > 5 else "")
        )
    click.echo(f"model written to {out_dir}")


FOREST_ONLY = {
    "--trees",
    "--depth",
    "--min-samples-leaf",
    "--max-features",
    "--mirror/--no-mirror",
    "--fold-forests/--refit",
    "--hard-negatives",
    "--segment-colours/--no-segment-colours",
    "--hierarchy",
}


def _max_features(value: str | None) -> float | str | None:
    """--max-features as ForestSettings takes it: a number where it reads as one."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


FOREST_ONLY |= {"--init"}
CNN_ONLY = {"--config", "--epochs", "--time-budget", "--batch-size", "--lr", "--data"}
CNN_ONLY |= {"--checkpoint-every", "--supervision", "--grad-every"}


def check_backend_options(backend: str, given: dict) -> None:
    """Refuse options that the chosen backend would ignore."""
    allowed = {
        "forest": FOREST_ONLY | {"--stages"},
        "cnn": CNN_ONLY | {"--stages"},
        "hybrid": (FOREST_ONLY | CNN_ONLY) - {"--data", "--init"},
        "mean": set(),
    }
    wrong = [name for name, value in given.items() if value is not None]
    wrong = [name for name in wrong if name not in allowed[backend]]
    if wrong:
        owners = [b for b in ("forest", "cnn") if set(wrong) <= allowed[b]]
        hint = f" (it is for --backend {owners[0]})" if len(owners) == 1 else ""
        target = "--stack (its SPEC counts the stages)" if backend == "hybrid" else backend
        target = target if backend == "hybrid" else f"--backend {backend}"
        raise PoseMachinesError(f"{', '.join(wrong)} does not apply to {target}{hint}")


# -- evaluate ------------------------------------------------------------------------------------


@cli.command()
@click.argument("model", type=click.Path(exists=True))
@data_options(default_split="test")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@device_option
@tta_options
@click.option(
    "--zero-based",
    is_flag=True,
    help="A .mat prediction file holds 0-based coordinates (default: 1-based, as the "
    "dataset's annotation file).",
)
@click.option(
    "--save-predictions",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write every stage's keypoints to this JSON file.",
)
@friendly_errors
def evaluate(
    model,
    dataset,
    split,
    images,
    data_root,
    synthetic_size,
    protocol,
    on_bad_image,
    on_bad_annotation,
    as_json,
    batch_size,
    device,
    flip,
    scales,
    zero_based,
    save_predictions,
):
    """Score MODEL (a model directory, or a .mat/.json prediction file) on a dataset split.

    A model directory is evaluated on the dataset it was trained on unless --dataset says
    otherwise; the scores are recorded in its manifest.
    """
    from posemachines.comparison import load_entry, score_entry
    from posemachines.io import update_manifest

    if batch_size < 1:
        raise PoseMachinesError(f"--batch-size must be at least 1, got {batch_size}")
    if save_predictions:
        from posemachines.predictions import check_replaceable

        check_replaceable(save_predictions)  # before the work, not after it
    tta = make_tta(flip, scales)
    entry = load_entry(model, device_name(device))
    name = dataset or (entry.model and entry.model.record.dataset_name) or "synthetic"
    if name == "packed":
        raise PoseMachinesError("this model was trained from a packed cache: pass --dataset")
    data = load_data(
        name,
        split,
        data_root,
        synthetic_size,
        protocol,
        images=images,
        on_bad_annotation=on_bad_annotation,
    )
    if entry.model is not None:
        entry.model.check_dataset(data)
    result, preds = score_entry(
        entry,
        data,
        batch_size,
        on_bad_image,
        progress=not as_json,
        one_based=not zero_based,
        tta=tta,
    )
    doc = result.to_dict()
    if save_predictions:
        from posemachines.model import Predictions
        from posemachines.predictions import write_predictions

        confidence = np.zeros(preds.shape[:3])
        write_predictions(
            save_predictions, Predictions(preds, confidence, data.names), data.skeleton
        )
    if entry.model is not None:
        evaluations = dict(entry.manifest.get("evaluations", {}))
        key = f"{data.name}:{data.split}:{data.protocol}"
        if not tta.is_identity:
            key += f":tta={tta.describe()}"
        evaluations[key] = {
            "n": result.n,
            "skipped_images": len(result.skipped_images),
            "metrics": result.metrics,
            "per_stage_pck@0.2": [s["pck@0.2"] for s in result.per_stage],
        }
        try:
            update_manifest(model, evaluations=evaluations)
        except OSError as exc:  # a read-only model still gets its scores printed
            echo_err(
                f"the scores are not recorded in {model}/manifest.json ({exc.strerror or exc})"
            )
    if result.skipped_images:
        names = result.skipped_images
        report_skipped(
            f"{len(names)} unreadable image(s) skipped and scored as missing predictions: "
            f"{', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
        )
    if as_json:
        click.echo(json.dumps(doc))
        return
    click.echo(format_result(doc))


def format_result(doc: dict) -> str:
    def pct(v):
        return "   -  " if v is None else f"{100 * v:6.1f}"

    keys = ("pck@0.2", "pck@0.1", "pckh@0.5", "pcp", "auc")
    head = f"{'':14s}" + "".join(f"{k:>10s}" for k in keys)
    tta = doc.get("test_time_augmentation") or {}
    views = ""
    if tta.get("flip") or tta.get("scales", [1.0]) != [1.0]:
        views = f"  test-time views: flip={tta['flip']} scales={tta['scales']}"
    title = f"{doc['dataset']}:{doc['split']}  n={doc['n']}  protocol={doc['protocol']}{views}"
    lines = [title, head]
    for t, stage in enumerate(doc["per_stage"], 1):
        lines.append(f"{'stage ' + str(t):14s}" + "".join(f"{pct(stage[k]):>10s}" for k in keys))
    lines.append("per joint (final stage)")
    for joint, m in doc["per_joint"].items():
        lines.append(f"{joint:14s}" + "".join(f"{pct(m[k]):>10s}" for k in keys))
    return "\n".join(lines)


from .compare_cmd import bench, compare  # noqa: E402
from .data_cmd import data  # noqa: E402
from .inspect_cmd import inspect  # noqa: E402
from .predict_cmd import predict  # noqa: E402

cli.add_command(predict)
cli.add_command(data)
cli.add_command(compare)
cli.add_command(bench)
cli.add_command(inspect)

if __name__ == "__main__":
    cli()
