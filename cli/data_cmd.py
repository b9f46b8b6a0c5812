"""`pm data`: which datasets were found, and packing training caches."""

from __future__ import annotations

import click
from posemachines.cli.common import echo_err, friendly_errors, on_bad_image_option, report_skipped

from posemachines.errors import PoseMachinesError


@click.group(invoke_without_command=True)
@click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder holding lsp/ and lspet/ (else $POSEMACHINES_DATA, else the cache).",
)
@click.pass_context
@friendly_errors
def data(ctx, data_root):
    """List the datasets, where each was found, and their sizes."""
    if ctx.invoked_subcommand is not None:
        return
    from posemachines.data import dataset_splits, datasets, find_data_root

    root, how = find_data_root(data_root)
    click.echo(f"data root: {root} (from {how})")
    known = datasets()
    custom = sorted(
        p.name
        for p in (root.iterdir() if root.is_dir() else [])
        if p.name not in known and p.is_dir() and dataset_splits(p.name, root)
    )
    for name, info in known.items():
        if info.built_in:
            click.echo(f"  {name:10s} {info.summary}")
        elif not dataset_splits(name, root):
            click.echo(f"  {name:10s} not found (expected {root / name}/{info.expects})")
        else:
            click.echo(f"  {name:10s} {_sizes(name, root, info.splits)}")
    for name in custom:
        click.echo(f"  {name:10s} {_sizes(name, root, ())}")


def _sizes(name: str, root, splits: tuple) -> str:
    """Where a dataset is and each split's size; a split that is not there or cannot be read
    says so."""
    from posemachines.data import dataset_splits, load_dataset

    present = dataset_splits(name, root)
    sizes, problems = [], []
    for split in present:
        try:
            sizes.append(f"{split} {len(load_dataset(name, split, root))}")
        except PoseMachinesError as exc:  # say what is wrong and go on
            problems.append(str(exc))
    if not sizes:
        return f"{root / name}  unreadable: {problems[0]}"
    missing = [s for s in splits if s not in present]
    absent = f" ({', '.join(missing)}: not there)" if missing else ""
    return f"{root / name}  {', '.join(sizes)}{absent}"


@data.command()
@click.argument("datasets", nargs=-1, required=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Cache file (.npz).")
@click.option("--data-root", type=click.Path(file_okay=False), default=None)
@click.option(
    "--side", type=int, default=256, show_default=True, help="Side of the stored crops in pixels."
)
@click.option(
    "--pad",
    type=float,
    default=1.5,
    show_default=True,
    help="Context kept around the person box: the crop's side is PAD times the box's.",
)
@click.option(
    "--format",
    "image_format",
    type=click.Choice(["jpeg", "webp"]),
    default="jpeg",
    show_default=True,
    help="Image compression (WebP: about 40 % smaller at the same quality).",
)
@click.option("--quality", type=int, default=90, show_default=True, help="Image quality, 1-100.")
@click.option("--synthetic-size", type=int, default=None)
@click.option("--jobs", type=int, default=-1, show_default=True)
@on_bad_image_option
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@friendly_errors
def pack(
    datasets,
    out,
    data_root,
    side,
    pad,
    image_format,
    quality,
    synthetic_size,
    jobs,
    on_bad_image,
    overwrite,
):
    """Write DATASET[:SPLIT]... (e.g. lsp:train lspet) as one training cache of crops."""
    from pathlib import Path

    from posemachines.data.pack import check_pack_options, load_named, pack_datasets

    check_pack_options(side, pad, quality, image_format)
    if jobs == 0 or jobs < -1:
        raise click.ClickException(f"--jobs must be -1 (all cores) or at least 1, got {jobs}")
    if Path(out).exists() and not overwrite:
        raise click.ClickException(f"{out} exists; pass --overwrite to replace it")
    info = pack_datasets(
        load_named(datasets, data_root, synthetic_size),
        out,
        side=side,
        quality=quality,
        pad=pad,
        n_jobs=jobs,
        image_format=image_format,
        on_bad_image=on_bad_image,
    )
    report_skipped(info["skipped"])
    echo_err(f"packed {info['n']} crops of {side} px ({info['megabytes']:.1f} MB) into {out}")


@data.command()
@click.argument("name")
@click.option(
    "--split",
    default=None,
    help="Only the archives this split needs (e.g. coco --split val skips the 18 GB train set).",
)
@click.option(
    "--url",
    "urls",
    multiple=True,
    help="Another address (a mirror), once per archive in the README's order "
    "(mpii: annotations, images; coco: annotations, val2017, train2017).",
)
@click.option(
    "--sha256", multiple=True, help="Expected SHA-256 of each archive, in the same order."
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Cache directory (default: $XDG_CACHE_HOME/posemachines).",
)
@click.option("--overwrite", is_flag=True, help="Download and replace parts already unpacked.")
@friendly_errors
def download(name, split, urls, sha256, cache_dir, overwrite):
    """Download dataset NAME (see `pm data`: lsp, lspet, mpii, coco, flic) into the cache.

    Downloads resume where they stopped; each archive's SHA-256 is printed (or checked against
    --sha256). The cache directory is the last place the data-root lookup searches, so `pm
    train --dataset NAME` finds it there with no further option.
    """
    from posemachines.data.download import fetch_dataset

    folder = fetch_dataset(
        name,
        split=split,
        urls=urls,
        sha256=sha256,
        cache_dir=cache_dir,
        overwrite=overwrite,
        say=echo_err,
    )
    click.echo(f"{name} ready in {folder}")
