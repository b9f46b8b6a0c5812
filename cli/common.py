"""Options and helpers shared by the ``pm`` commands."""

from __future__ import annotations

import functools
import logging
import shlex

import click

from posemachines.errors import PoseMachinesError


def friendly_errors(func):
    """Turn the library's input errors, and the operating system's (a read-only folder, a full
    disk, a missing permission), into click's one-line error and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except PoseMachinesError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise click.ClickException(os_error_line(exc)) from None
        except MemoryError:
            raise click.ClickException(
                "out of memory; use fewer or smaller images (--synthetic-size, --batch-size) "
                "or a machine with more memory"
            ) from None

    return wrapper


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error: the file, what went wrong, what to do."""
    import errno

    where = f"{exc.filename}: " if exc.filename else ""
    what = exc.strerror or str(exc)
    hint = {
        errno.ENOSPC: "free some space or write elsewhere (--out)",
        errno.EDQUOT: "free some space or write elsewhere (--out)",
        errno.EACCES: "check the permissions, or write elsewhere (--out)",
        errno.EPERM: "check the permissions, or write elsewhere (--out)",
        errno.EROFS: "write elsewhere (--out)",
    }.get(exc.errno)
    return f"{where}{what}" + (f"; {hint}" if hint else "")


def stacked(*options):
    """Several click options as one decorator, shown in the order given."""

    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


IMAGES_OPTION = click.option(
    "--images",
    type=click.Path(file_okay=False),
    default=None,
    help="The images of a --dataset coco-format:FILE.json.",
)
DATA_ROOT_OPTION = click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder holding lsp/ and lspet/ (else $POSEMACHINES_DATA, else the cache directory).",
)
SYNTHETIC_SIZE_OPTION = click.option(
    "--synthetic-size",
    type=int,
    default=None,
    help="Number of synthetic images in the split (synthetic: train 400, test 100; "
    "synthetic-crowd: train 800, test 100).",
)
PROTOCOL_OPTION = click.option(
    "--protocol",
    type=click.Choice(["image", "gt", "given"]),
    default=None,
    help="Where the person box comes from: 'image' (image centre and size, honest), 'gt' "
    "(ground-truth joints, flattering) or 'given' (the dataset's own boxes: MPII centre/scale, "
    "COCO bbox). Default: the dataset's own (image for lsp and synthetic, given for mpii and "
    "coco, gt for flic).",
)


def data_options(default_split: str):
    """The options that name a dataset split (``data_request`` turns them into one)."""
    from posemachines.data import datasets

    known = datasets()
    by_splits: dict[tuple, list[str]] = {}
    for name, info in known.items():
        by_splits.setdefault(info.splits, []).append(name)
    splits = "; ".join(f"{'/'.join(k)} ({', '.join(v)})" for k, v in by_splits.items())
    dataset = click.option(
        "--dataset",
        default=None,
        help=f"{', '.join(known)}, a data-root folder holding a COCO-format keypoints.json, "
        "or coco-format:FILE.json (with --images). Default: see the command's help.",
    )
    split = click.option(
        "--split", default=default_split, show_default=True, help=f"Split: {splits}."
    )
    return stacked(
        dataset,
        split,
        IMAGES_OPTION,
        DATA_ROOT_OPTION,
        SYNTHETIC_SIZE_OPTION,
        PROTOCOL_OPTION,
        on_bad_image_option,
        on_bad_annotation_option,
    )


def tta_options(func):
    """--flip and --scales: test-time augmentation (see posemachines.core.tta)."""
    func = click.option(
        "--scales",
        default=None,
        help="Also average the beliefs of crops zoomed by these factors, e.g. 0.7,1.0,1.3 (the "
        "paper's scale search; include 1.0 for the plain crop).",
    )(func)
    return click.option(
        "--flip", is_flag=True, help="Also average the beliefs of the mirrored crop."
    )(func)


def make_tta(flip: bool, scales: str | None):
    from posemachines.core.tta import TestTimeAugmentation, parse_scales

    return TestTimeAugmentation(flip=flip, scales=parse_scales(scales))


def on_bad_image_option(func):
    return click.option(
        "--on-bad-image",
        type=click.Choice(["skip", "stop"]),
        default="skip",
        show_default=True,
        help="An unreadable image is skipped (counted and reported) or stops the command.",
    )(func)


def on_bad_annotation_option(func):
    return click.option(
        "--on-bad-annotation",
        type=click.Choice(["stop", "skip"]),
        default="stop",
        show_default=True,
        help="A person whose annotation is bad (a joint or box not finite, a box of no size, "
        "a field of the wrong type) stops the command with one line naming it, or is left "
        "out and counted.",
    )(func)


def overwrite_option(func):
    return click.option(
        "--overwrite",
        is_flag=True,
        help="Write into a --out folder that holds other files (they stay).",
    )(func)


def report_skipped(skipped) -> None:
    """One line on stderr when unreadable images were passed over."""
    if skipped:
        echo_err(skipped if isinstance(skipped, str) else skipped.summary())


def device_option(func):
    return click.option(
        "--device",
        default="auto",
        show_default=True,
        help="cpu, cuda or auto (a GPU when one is usable) for CNN stages.",
    )(func)


def data_request(o: dict, seed: int = 0):
    """The dataset split the data options name (``data_options``), to load when needed."""
    from posemachines.data import DataRequest

    if o["synthetic_size"] is not None and o["synthetic_size"] < 1:
        raise PoseMachinesError(f"--synthetic-size must be at least 1, got {o['synthetic_size']}")
    keys = ("dataset", "split", "data_root", "synthetic_size", "protocol", "images")
    name, split, data_root, size, protocol, images = (o[k] for k in keys)
    return DataRequest(name, split, data_root, size, protocol, images, o["on_bad_annotation"], seed)


class CommandGroup(click.Group):
    """``pm``: keeps the command line as typed, for the records (``command_line``)."""

    def make_context(self, info_name, args, parent=None, **extra):
        line = shlex.join(["pm", *args])
        ctx = super().make_context(info_name, args, parent, **extra)
        ctx.meta["posemachines.command_line"] = line
        return ctx


def command_line() -> str:
    """The ``pm`` command line being run, as a record keeps it."""
    return click.get_current_context().meta.get("posemachines.command_line", "pm")


class NotesToStderr(logging.Handler):
    """The library's notes (``progress.note``) as lines on the stderr of the command running
    now (a test runner swaps stderr between commands)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(record.getMessage(), err=True)


def show_notes() -> None:
    """Show the library's notes on stderr, once per process."""
    logger = logging.getLogger("posemachines")
    if not any(isinstance(h, NotesToStderr) for h in logger.handlers):
        logger.addHandler(NotesToStderr())
        logger.propagate = False


def echo_err(message: str) -> None:
    click.echo(message, err=True)


def device_name(device: str) -> str:
    from posemachines.devices import resolve_device

    return resolve_device(device)


def runtime_option(func):
    return click.option(
        "--runtime",
        type=click.Choice(["torch", "onnxruntime"]),
        default="torch",
        show_default=True,
        help="Run the model's CNN stages in torch, or in ONNX Runtime (exported on the fly; "
        "needs posemachines[onnx]). An .onnx MODEL always runs in ONNX Runtime.",
    )(func)


class ModelArgument(click.ParamType):
    """A model: a directory, an exported .onnx or a zoo name (``pm models``). A path that
    exists wins over a zoo name of the same spelling, and a line says so."""

    name = "model"

    def convert(self, value, param, ctx):
        from posemachines.zoo import resolve

        try:
            path, note = resolve(value)
        except PoseMachinesError as exc:
            self.fail(str(exc), param, ctx)
        if note:
            echo_err(note)
        return str(path)


MODEL = ModelArgument()


def default_cnn(doing: str) -> str:
    """The zoo's default CNN, for a command given no model, said in one line."""
    from posemachines.zoo import DEFAULT_CNN

    model = MODEL.convert(DEFAULT_CNN, None, None)
    echo_err(f"no model given: {doing} the zoo's {DEFAULT_CNN} (pm models lists the others)")
    return model
