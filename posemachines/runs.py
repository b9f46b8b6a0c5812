"""Output folders: ``runs/forest-1``, ``runs/forest-2``, ... when no ``--out`` is given, and the
rule that a command never writes into a folder of someone else's without being told.

A folder given with ``--out`` may be used when it does not exist, is empty, or already holds
what this command writes (``owned_by``: a previous report of ``pm compare``, the keypoints of
``pm predict``; a training run's own checkpoint with ``--resume``). Anything else needs
``--overwrite``, and even then only the command's own files are replaced. A folder made for a
run that fails before writing anything is removed again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from .errors import PoseMachinesError


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
        if "checkpoint" not in p.relative_to(root).parts
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
    path: str | Path, overwrite: bool = False, owned_by: tuple[str, ...] = ()
) -> Path:
    """Refuse ``path`` when it is a file, or a non-empty folder that holds none of the files
    in ``owned_by`` and ``overwrite`` is not given."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PoseMachinesError(f"--out {path} is a file, not a folder")
    if not path.is_dir() or overwrite:
        return path
    entries = list(path.iterdir())
    if entries and not any((path / name).exists() for name in owned_by):
        raise PoseMachinesError(
            f"--out {path} is not empty ({_describe(entries)}); pass --overwrite to write into "
            "it (only this command's own files are replaced) or choose another folder"
        )
    return path


@contextmanager
def output_folder(
    path: str | Path | None,
    prefix: str,
    *,
    overwrite: bool = False,
    owned_by: tuple[str, ...] = (),
    runs_root: str | Path = "runs",
) -> Iterator[Path]:
    """The folder a command writes to: ``path`` (checked) or a new ``runs_root/prefix-N``.

    If the command fails and the folder was made here and is still empty, it is removed.
    """
    made = None
    if path is None:
        root_existed = Path(runs_root).is_dir()
        folder = next_run_dir(prefix, runs_root)
        made = folder if root_existed else Path(runs_root)
    else:
        folder = check_output_folder(path, overwrite, owned_by)
        if not folder.exists():
            missing = [p for p in (folder, *folder.parents) if not p.exists()]
            folder.mkdir(parents=True, exist_ok=True)  # another process may make it too
            made = missing[-1]  # the top folder made here
    try:
        yield folder
    except BaseException:
        if made is not None:
            _remove_empty(folder, made)
        raise


def _remove_empty(folder: Path, top: Path) -> None:
    """Remove ``folder`` and its parents up to ``top`` while they are empty."""
    for p in (folder, *folder.parents):
        try:
            p.rmdir()
        except OSError:
            return
        if p == top:
            return
