"""Output folders: ``runs/forest-1``, ``runs/forest-2``, ... when no ``--out`` is given, and the
rule that a command never writes into a folder of someone else's without being told.

A folder given with ``--out`` may be used when it does not exist, is empty, or is the same
command's earlier output (its ``files.OwnedFolder`` record says so: a previous report of ``pm
compare``, a prediction folder, a training run's own checkpoint with ``--resume``). Anything
else needs ``--overwrite``, and even then only files its record lists are replaced: outputs
are known by the record alone, never by what their contents look like.
A folder made for a run that fails before writing anything is removed again.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from posemachines.errors import PoseMachinesError
from posemachines.files.owned import BOOKKEEPING, OwnedFolder, is_open


def _numbered(root: Path, prefix: str) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)$")
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := pattern.match(p.name))]
    return sorted(found)


def next_run_dir(prefix: str, root: str | Path = "runs") -> Path:
    """The first unused ``root/prefix-N``; created empty so two runs never share it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n = (_numbered(root, prefix)[-1][0] if _numbered(root, prefix) else 0) + 1
    while True:
        path = root / f"{prefix}-{n}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def model_dirs(root: str | Path = "runs") -> list[Path]:
    """Every finished model directory below ``root`` (checkpoints' inner models excluded)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p.parent
        for p in root.rglob("manifest.json")
        if not {"checkpoint", "finished"} & set(p.relative_to(root).parts)
    )


def latest_run(backend: str, root: str | Path = "runs") -> Path | None:
    """The most recently trained model of ``backend`` anywhere below ``root``, or None."""
    found = []
    for folder in model_dirs(root):
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict) and manifest.get("backend") == backend:
            # When it was saved (evaluations rewrite the manifest later, so not its mtime).
            saved = manifest.get("saved_at")
            if not isinstance(saved, str):
                mtime = (folder / "manifest.json").stat().st_mtime
                saved = datetime.fromtimestamp(mtime, timezone.utc).isoformat(timespec="seconds")
            found.append((saved, str(folder), folder))
    return max(found)[2] if found else None


def _describe(entries: list[Path]) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in entries)
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"{len(names)} entr{'y' if len(names) == 1 else 'ies'}: {shown}"


def check_output_folder(
    path: str | Path, command: str, overwrite: bool = False, reuse: bool = True
) -> Path:
    """Refuse ``path`` when it is a file or a dangling link, or a non-empty folder that is not
    ``command``'s own earlier output (or, without ``reuse``, any non-empty folder) and
    ``overwrite`` is not given."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise PoseMachinesError(f"--out {path} is a link to {os.readlink(path)}, which is missing")
    if path.exists() and not path.is_dir():
        raise PoseMachinesError(f"--out {path} is a file, not a folder")
    if not path.is_dir() or overwrite:
        return path
    try:
        entries = [p for p in path.iterdir() if p.name not in BOOKKEEPING]
    except OSError as exc:
        raise PoseMachinesError(f"--out {path}: {exc.strerror or exc}") from None
    record = OwnedFolder.read_record(path)
    ours = record is not None and record.get("command") == command
    if entries and not (ours and reuse):
        what = (
            f"an earlier `pm {command}` output" if ours else f"not an earlier `pm {command}` output"
        )
        raise PoseMachinesError(
            f"--out {path} is not empty ({_describe(entries)}) and {what}; pass --overwrite to "
            "write into it (only files posemachines wrote there are replaced) or choose another "
            "folder"
        )
    return path


@contextmanager
def output_folder(
    path: str | Path | None,
    command: str,
    *,
    overwrite: bool = False,
    reuse: bool = True,
    prefix: str | None = None,
    runs_root: str | Path = "runs",
) -> Iterator[Path]:
    """The folder a command writes to, open as an ``OwnedFolder`` (locked, every write
    checked and recorded): ``path`` (checked again once locked: another command may have
    written it meanwhile) or a new ``runs_root/PREFIX-N`` (``prefix`` defaults to
    ``command``).

    If the command fails and the folder was made here and holds nothing but bookkeeping, it
    is removed.
    """
    made = None
    if path is None:
        root_existed = Path(runs_root).is_dir()
        folder = next_run_dir(prefix or command, runs_root)
        made = folder if root_existed else Path(runs_root)
    else:
        folder = check_output_folder(path, command, overwrite, reuse)
        if not folder.exists():
            missing = [p for p in (folder, *folder.parents) if not p.exists()]
            try:
                folder.mkdir(parents=True, exist_ok=True)  # another process may make it too
            except OSError as exc:
                raise PoseMachinesError(f"--out {folder}: {exc.strerror or exc}") from None
            made = missing[-1] if missing else None  # the top folder made here (if we did)
    locked = False
    try:
        with OwnedFolder(folder, command):
            locked = True
            if path is not None:
                check_output_folder(path, command, overwrite, reuse)
            yield folder
    except BaseException:
        if made is not None and locked:  # a folder another command holds is not ours to clear
            _remove_empty(folder, made)
        raise


@contextmanager
def owned(folder: str | Path, command: str) -> Iterator[Path]:
    """``folder`` open as an ``OwnedFolder`` for a write from the Python API, unless this
    process has it open already (a command saving into its own --out)."""
    if is_open(folder):
        yield Path(folder)
        return
    with OwnedFolder(folder, command):
        yield Path(folder)


def _remove_empty(folder: Path, top: Path) -> None:
    """Remove ``folder`` (when it holds only bookkeeping) and its parents up to ``top`` while
    they are empty."""
    try:
        if all(p.name in BOOKKEEPING for p in folder.iterdir()):
            for name in BOOKKEEPING:
                (folder / name).unlink(missing_ok=True)
    except OSError:
        return
    for p in (folder, *folder.parents):
        try:
            p.rmdir()
        except OSError:
            return
        if p == top:
            return
