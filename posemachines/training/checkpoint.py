"""One checkpoint format for every trainer.

A checkpoint is a folder of generations, ``checkpoint/000001``, ``000002``, ...: each is
written whole into a new folder (the trainer's own files first, then ``state.json`` last,
which marks it complete), and only then are the older ones removed. A kill at any instant
therefore leaves the previous complete generation or the new one, never a mix of the two; an
incomplete generation is ignored and removed. ``state.json`` holds the run's identity
(everything that must match to resume: settings, data, seed) and its progress.
Resuming compares the saved identity with the new run's field by field and names every field
that differs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from posemachines.errors import PoseMachinesError
from posemachines.files.owned import atomic_write_json, make_folder


def differences(saved, now, prefix: str = "", labels=("checkpoint", "now")) -> list[str]:
    """``field: checkpoint A, now B`` for every leaf of two nested dicts that differs (the two
    words are ``labels``)."""
    was, is_ = labels
    if not (isinstance(saved, dict) and isinstance(now, dict)):
        if saved == now:
            return []
        return [f"{prefix.rstrip('.') or 'value'}: {was} {_short(saved)}, {is_} {_short(now)}"]
    out = []
    for key in sorted(set(saved) | set(now), key=str):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.", labels)
        elif a != b:
            out.append(f"{prefix}{key}: {was} {_short(a)}, {is_} {_short(b)}")
    return out


def _short(value, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def first_items(items: list[str], count: int = 3) -> str:
    """The first ``count`` of ``items`` joined, and how many more there are: a message stays
    one readable line however long the list."""
    more = f"; and {len(items) - count} more" if len(items) > count else ""
    return "; ".join(items[:count]) + more


class Checkpoint:
    """The checkpoint folder of a run whose identity is ``identity``.

    Write one with ``folder = begin()``, the trainer's files into ``folder``, then
    ``commit(progress)``; read one with ``load_state()``, the trainer's files from ``current``.
    """

    def __init__(self, folder: str | Path, identity: dict):
        self.folder = Path(folder)
        self.identity = identity
        self.current: Path | None = None  # the generation loaded or being written

    def _generations(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.name.isdigit() and p.is_dir())

    def latest(self) -> Path | None:
        """The newest complete generation (a checkpoint of before generations: the folder)."""
        complete = [g for g in self._generations() if (g / "state.json").is_file()]
        if complete:
            return complete[-1]
        return self.folder if (self.folder / "state.json").is_file() else None

    def exists(self) -> bool:
        return self.latest() is not None

    def load_state(self) -> dict:
        """The saved progress; refuses a missing checkpoint or a different identity."""
        self.current = self.latest()
        if self.current is None:
            raise PoseMachinesError(
                f"{self.folder.parent}: nothing to resume (no complete checkpoint in "
                f"{self.folder.name}/)"
            )
        path = self.current / "state.json"
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise PoseMachinesError(f"{path}: unreadable ({exc})") from None
        if not isinstance(state, dict):
            raise PoseMachinesError(f"{path}: not a checkpoint state")
        saved = state.get("identity")
        if saved is None:  # written before identities had a field of their own
            saved = {k: state.get(k) for k in self.identity}
        differs = differences(saved, self.identity)
        if differs:
            raise PoseMachinesError(
                f"refusing to resume from a different configuration ({first_items(differs)}); "
                "train without --resume, into a new --out or with --overwrite"
            )
        return state

    def begin(self) -> Path:
        """A new, empty generation folder for the trainer's files."""
        numbers = [int(g.name) for g in self._generations()]
        self.current = self.folder / f"{max(numbers, default=0) + 1:06d}"
        make_folder(self.current)
        return self.current

    def commit(self, progress: dict) -> None:
        """Mark the generation ``begin`` made complete, then remove every other one."""
        atomic_write_json(self.current / "state.json", {"identity": self.identity, **progress})
        for entry in self.folder.iterdir():
            if entry != self.current:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
