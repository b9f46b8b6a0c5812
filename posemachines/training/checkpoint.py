"""One checkpoint format for every trainer.

A checkpoint is a folder: the trainer's own files first, then ``state.json`` written last, so
that a checkpoint without it is incomplete and ignored. ``state.json`` holds the run's
identity (everything that must match to resume: settings, data, seed) and its progress.
Resuming compares the saved identity with the new run's field by field and names every field
that differs.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import PoseMachinesError
from ..files import atomic_write_json


def differences(saved, now, prefix: str = "") -> list[str]:
    """``field: checkpoint A, now B`` for every leaf of two nested dicts that differs."""
    if not (isinstance(saved, dict) and isinstance(now, dict)):
        return (
            []
            if saved == now
            else [f"{prefix.rstrip('.') or 'value'}: checkpoint {saved!r}, now {now!r}"]
        )
    out = []
    for key in sorted(set(saved) | set(now), key=str):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: checkpoint {a!r}, now {b!r}")
    return out


class Checkpoint:
    """The checkpoint folder of a run whose identity is ``identity``."""

    def __init__(self, folder: str | Path, identity: dict):
        self.folder = Path(folder)
        self.identity = identity

    @property
    def state_path(self) -> Path:
        return self.folder / "state.json"

    def exists(self) -> bool:
        return self.state_path.is_file()

    def load_state(self) -> dict:
        """The saved progress; refuses a missing checkpoint or a different identity."""
        if not self.exists():
            raise PoseMachinesError(
                f"{self.folder.parent}: nothing to resume (no checkpoint/state.json)"
            )
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError) as exc:
            raise PoseMachinesError(f"{self.state_path}: unreadable ({exc})") from None
        if not isinstance(state, dict):
            raise PoseMachinesError(f"{self.state_path}: not a checkpoint state")
        saved = state.get("identity")
        if saved is None:  # written before identities had a field of their own
            saved = {k: state.get(k) for k in self.identity}
        differs = differences(saved, self.identity)
        if differs:
            raise PoseMachinesError(
                f"refusing to resume from a different configuration ({'; '.join(differs)}); "
                "train without --resume, into a new --out or with --overwrite"
            )
        return state

    def write_state(self, progress: dict) -> None:
        """Mark the checkpoint complete; call after the trainer's files are written."""
        atomic_write_json(self.state_path, {"identity": self.identity, **progress})
