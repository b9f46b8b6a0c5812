"""The registry itself: ``register_backend``, ``option`` for settings fields, ``TrainingRun``
(see the package's docstring)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import PoseMachinesError
from ..plugins import load_entry_points, resolve

OPTION = "posemachines.option"  # the key of a field's command-line description in its metadata


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
            from ..progress import say

            say(message)


@dataclass(frozen=True)
class Backend:
    name: str
    settings: type
    trainer: type | str
    stages: dict = field(default_factory=dict)
    summary: str = ""

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
# What every training run is given apart from its settings (``pm train``'s own options).
RUN_OPTIONS = set(
    "backend stack folds dataset split images data_root synthetic_size protocol on_bad_image "
    "on_bad_annotation out seed jobs n_jobs dask resume overwrite progress".split()
)
_PLUGINS_LOADED = False


def register_backend(
    name: str, *, settings: type, trainer: type | str, stages: dict, summary: str = ""
) -> Backend:
    """Make ``name`` a backend (see the module's docstring); returns its record. Registering a
    name again replaces it (a notebook re-running its cell)."""
    if not name.isidentifier():
        raise PoseMachinesError(f"a backend name must be a plain word, not {name!r}")
    owner = {kind: b.name for b in _BACKENDS.values() for kind in b.stages if b.name != name}
    clash = [kind for kind in stages if kind in owner]
    if clash:
        raise PoseMachinesError(f"stage kind {clash[0]!r} belongs to backend {owner[clash[0]]!r}")
    taken = sorted({n for n, _, _ in options_of(settings)} & RUN_OPTIONS)
    if taken:
        raise PoseMachinesError(
            f"backend {name!r}: the setting {taken[0]!r} cannot be an option, `pm train` has its "
            "own; give it another name"
        )
    backend = Backend(name, settings, trainer, dict(stages), summary)
    _BACKENDS[name] = backend
    return backend


def unregister_backend(name: str) -> None:
    """Forget a backend (models made of its stages no longer load)."""
    _BACKENDS.pop(name, None)


def backends() -> dict[str, Backend]:
    """Every registered backend by name, plugins included."""
    global _PLUGINS_LOADED
    if not _PLUGINS_LOADED:
        _PLUGINS_LOADED = True
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
        from ..zoo import resolve

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


def stack_settings(settings: Any, stages: int, codec, on_beliefs: bool) -> Any:
    """A backend's settings for one part of a stack: its stage count and the stack's crop and
    belief grid. A settings class may say how itself (``for_stack``); otherwise the fields
    ``stages``, ``input_size``, ``stride`` and ``sigma`` are replaced where it has them."""
    if hasattr(settings, "for_stack"):
        return settings.for_stack(stages, codec, on_beliefs)
    names = field_names(settings)
    wanted = {
        "stages": stages,
        "input_size": codec.input_size,
        "stride": codec.stride,
        "sigma": codec.sigma,
    }
    return replace(settings, **{k: v for k, v in wanted.items() if k in names})
