"""The settings schema: how a backend's settings fields become ``pm train`` options (help, type,
range, flag), the range checks every setting gets, and the names ``pm train`` keeps for itself.
The click side of it is ``cli/common.py``; this is what a backend's settings module imports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from posemachines.errors import PoseMachinesError

OPTION = "posemachines.option"  # the key of a field's command-line description in its metadata
# What every training run is given apart from its settings (``pm train``'s own options).
RUN_OPTIONS = set(
    "backend stack folds dataset split images data_root synthetic_size protocol on_bad_image "
    "on_bad_annotation out seed jobs n_jobs dask resume overwrite progress".split()
)


@dataclass(frozen=True)
class Option:
    """How a settings field appears on the command line."""

    help: str
    flag: str | None = None  # default: --field-name
    negative: str | None = None  # the off switch of a boolean: "--no-mirror", "--refit"
    type: Any = None  # click type or a converter; default: from the field's annotation
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple | None = None
    metavar: str | None = None


def option(help: str, **how) -> dict:
    """Field metadata that makes a settings field a ``pm train`` option:
    ``trees: int = field(default=40, metadata=option("Trees per stage.", minimum=1))``."""
    return {OPTION: Option(help, **how)}


def field_names(settings) -> set[str]:
    """The fields of a settings dataclass (or of one of its values)."""
    return {f.name for f in fields(settings)}


def flag_of(name: str, how: Option | None = None) -> str:
    """The command-line spelling of setting ``name``: its option's flag, else ``--the-name``."""
    return (how.flag if how is not None else None) or "--" + name.replace("_", "-")


def options_of(settings: type) -> list[tuple[str, Option, Any]]:
    """(field name, Option, default) of every command-line field of a settings class."""
    return [
        (f.name, f.metadata[OPTION], None if f.default is MISSING else f.default)
        for f in fields(settings)
        if OPTION in f.metadata
    ]


def existing(flag: str, *, folder: bool, hint: str = "") -> Callable[[str], str]:
    """A converter for an option that names an existing folder (or file): the value, or one
    line saying it is not there."""

    def convert(value: str) -> str:
        path = Path(value)
        if not (path.is_dir() if folder else path.is_file()):
            what = "model directory" if folder else "file"
            raise PoseMachinesError(f"{flag} {value}: no such {what}{hint}")
        return value

    return convert


def model_reference(flag: str) -> Callable[[str], str]:
    """A converter for an option that names a model: a model directory or a zoo name (``pm
    models``), kept as given (so a record names the zoo model), or one line saying it is
    neither."""

    def convert(value: str) -> str:
        from posemachines.zoo import resolve

        try:
            resolve(value)
        except PoseMachinesError as exc:
            raise PoseMachinesError(f"{flag} {exc}") from None
        return value

    return convert


def check_ranges(settings: Any) -> None:
    """Refuse a value outside its option's range or choices, naming the option."""
    for name, how, _ in options_of(type(settings)):
        value = getattr(settings, name)
        if value is None or isinstance(value, bool):
            continue
        flag = flag_of(name, how)
        if how.choices is not None and value not in how.choices:
            raise PoseMachinesError(
                f"{flag} must be one of {', '.join(map(str, how.choices))}, got {value!r}"
            )
        if not isinstance(value, (int, float)):
            continue
        if how.minimum is not None and value < how.minimum:
            raise PoseMachinesError(f"{flag} must be at least {how.minimum:g}, got {value}")
        if how.maximum is not None and value > how.maximum:
            raise PoseMachinesError(f"{flag} must be at most {how.maximum:g}, got {value}")
