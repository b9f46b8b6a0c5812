"""What the two registries (backends, datasets) share: references imported on first use and the
entry points through which other installed packages register."""

from __future__ import annotations

import importlib
import warnings
from typing import Any


def resolve(target: Any) -> Any:
    """``"module:name"`` imported (so that a registry can name a class without importing torch
    at start-up); anything else as it is."""
    if not isinstance(target, str):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def load_entry_points(group: str) -> None:
    """Import the modules that installed packages name in the entry-point ``group``; one that
    fails is named in one warning and the rest go on (a broken plugin must not take the
    built-in ones down)."""
    from importlib.metadata import entry_points

    for point in entry_points(group=group):
        try:
            point.load()
        except Exception as exc:
            warnings.warn(f"{group} plugin {point.name!r} not loaded: {exc}", stacklevel=2)
