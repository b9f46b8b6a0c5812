"""Writing files so that nothing is half-written, nothing of the user's is replaced, and
checking what was written.

Every file the toolkit writes goes to a temporary name in the same folder (``.NAME.pm-tmp-*``),
is flushed to disk, and is renamed into place: a reader sees the old file or the new one, never
a part. A process killed mid-write leaves such a temporary; the next command that owns the
folder sweeps it. Files get the user's umask like any other program's files.

A command's output folder is an ``OwnedFolder``: locked while the command writes it (an
advisory lock on the folder itself, which the system releases when the process dies), with a
record (``.pm-owned.json``) of every entry the command has ever written there. While one is
open, every write below it is checked: an entry the toolkit did not write is never replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from posemachines.errors import PoseMachinesError

TEMPORARY = ".pm-tmp-"  # in the name of every file being written, until it is renamed
RECORD = ".pm-owned.json"  # an output folder's record of what the toolkit wrote in it
BOOKKEEPING = (RECORD,)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then rename it into place."""
    path = Path(path)
    make_folder(path.parent)
    claim(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMPORARY}", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; ours are ordinary
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_many(folder: str | Path, contents: dict[str, bytes]) -> None:
    """Write several files of ``folder`` as one: every one under a temporary name first, then
    all renamed in one go; a failure among the renames puts the previous files back, so the
    folder holds the old set or the new one."""
    folder = Path(folder)
    staged, kept, done = [], [], []
    try:
        for name, data in contents.items():
            claim(folder / name)
            fd, tmp = tempfile.mkstemp(prefix=f".{name}{TEMPORARY}", dir=folder)
            staged.append((tmp, folder / name))
            os.chmod(tmp, 0o666 & ~_umask())
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for _, path in staged:  # the previous version of each, to put back on failure
            if path.is_file() and not path.is_symlink():
                old = folder / f".{path.name}{TEMPORARY}previous"
                os.link(path, old)
                kept.append((old, path))
        for tmp, path in staged:
            os.replace(tmp, path)
            done.append(path)
    except BaseException:
        for old, path in kept:
            if path in done:
                os.replace(old, path)
        for path in done:
            if path not in {p for _, p in kept}:
                path.unlink(missing_ok=True)
        raise
    finally:
        for p in [Path(t) for t, _ in staged] + [old for old, _ in kept]:
            p.unlink(missing_ok=True)


def atomic_write_json(path: str | Path, obj) -> None:
    """``obj`` as indented JSON (numpy values as plain ones, non-finite floats as null)."""
    atomic_write_bytes(path, json_text(obj).encode())


def json_text(obj) -> str:
    """``obj`` as the indented JSON text ``atomic_write_json`` writes."""
    return json.dumps(json_values(obj), indent=2, allow_nan=False) + "\n"


def json_values(obj):
    """``obj`` with numpy scalars and arrays as plain values, tuples as lists, NaN as None."""
    if isinstance(obj, dict):
        return {str(k): json_values(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_values(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_values(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_folder(path: str | Path) -> Path:
    """``mkdir -p path``, recorded as the toolkit's when inside an open ``OwnedFolder``."""
    path = Path(path)
    claim(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sweep_temporaries(folder: str | Path) -> int:
    """Remove the temporaries a killed writer left anywhere below ``folder``; how many."""
    found = [p for p in Path(folder).rglob(f"*{TEMPORARY}*") if p.is_file() or p.is_symlink()]
    for p in found:
        p.unlink(missing_ok=True)
    return len(found)


# -- owned output folders -----------------------------------------------------------------------

_open_folders: list[OwnedFolder] = []


def claim(path: str | Path) -> None:
    """Before writing ``path``: inside an open ``OwnedFolder``, record it as the toolkit's, or
    refuse it when something the toolkit did not write is already there."""
    path = Path(os.path.abspath(path))
    for folder in _open_folders:
        if folder.root in path.parents:  # the folder itself needs no claim
            folder.claim(path.relative_to(folder.root).parts[0])
            return


def is_open(path: str | Path) -> bool:
    """Whether ``path`` is, or lies inside, an ``OwnedFolder`` this process has open."""
    path = Path(os.path.abspath(path))
    return any(f.root == path or f.root in path.parents for f in _open_folders)


def _lock(folder: Path) -> int | None:
    """An open descriptor of ``folder`` holding an exclusive advisory lock on it, or None when
    another process holds it. (Without ``fcntl``, on Windows, nothing is locked: -1.)"""
    try:
        import fcntl
    except ImportError:
        return -1
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class OwnedFolder:
    """The folder a command writes: locked while open, every entry it writes recorded.

    ``command`` names what writes it (``train``, ``predict``, ``compare``): a folder is the
    command's own earlier output when its record names the same command. Entries already in
    the record may be replaced; any other entry that exists is left alone and the write is
    refused with one line. A record that lists nothing left in the folder when the command
    ends (it failed and took its files back) goes too, so a refused write leaves no trace.
    """

    def __init__(self, root: str | Path, command: str):
        self.root = Path(os.path.abspath(root))
        self.command = command
        self.owned: set[str] = set()
        self._fd: int | None = None
        self._had_record = False

    @staticmethod
    def read_record(root: str | Path) -> dict | None:
        """The record of what the toolkit wrote in ``root``, or None when there is none."""
        record = read_json_object(Path(root) / RECORD)
        return record if isinstance(record.get("files"), list) else None

    def __enter__(self) -> OwnedFolder:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = _lock(self.root)
        if fd is None:
            raise PoseMachinesError(
                f"{self.root} is being written by another pm command; wait for it to finish "
                "or choose another --out"
            )
        self._fd = fd
        record = self.read_record(self.root)
        self._had_record = record is not None
        if record is not None:
            self.owned = {f for f in record["files"] if plain_name(f)}
            # A single file written into another command's folder keeps that folder's owner.
            if isinstance(record.get("command"), str):
                self.command = record["command"]
            for name in self.owned:  # what a killed writer of ours left half-written
                if (self.root / name).is_dir() and not (self.root / name).is_symlink():
                    sweep_temporaries(self.root / name)
        for p in self.root.glob(f"*{TEMPORARY}*"):  # named so by us alone
            p.unlink(missing_ok=True)
        _open_folders.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _open_folders.remove(self)
        try:
            left = any((self.root / n).exists() for n in self.owned)
            if not self._had_record and not left:
                (self.root / RECORD).unlink(missing_ok=True)
        finally:
            if self._fd is not None and self._fd >= 0:
                os.close(self._fd)  # releases the lock
            self._fd = None

    def claim(self, name: str) -> None:
        if name in self.owned or name in BOOKKEEPING or TEMPORARY in name:
            return
        refuse_if_foreign(self.root / name, self.owned)
        self.owned.add(name)
        self._write_record()

    def _write_record(self) -> None:
        atomic_write_json(
            self.root / RECORD, {"command": self.command, "files": sorted(self.owned)}
        )


def plain_name(name) -> bool:
    """Whether ``name`` names an entry directly inside a folder: no path, no parent."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and Path(name).name == name
    )


def read_json_object(path: str | Path) -> dict:
    """The JSON object in ``path``, or {} when there is none to read (missing, unreadable,
    not JSON, not an object)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


def write_owned_file(
    path: str | Path, data: bytes, command: str, *, replace: bool = True, hint: str = ""
) -> None:
    """Write the single file ``path`` as ``command``'s output: its folder's record must list
    an existing file as written by posemachines (and ``replace`` allow it), else nothing is
    written. Temporaries a killed writer left in the folder are swept first."""
    path = Path(path)
    if is_open(path.parent):  # a command writing into the folder it already holds
        _check_single(path, replace, hint)
        atomic_write_bytes(path, data)
        return
    with OwnedFolder(make_folder(path.parent), command) as owner:
        owner.claim(path.name)  # refuses a file posemachines did not write
        _check_single(path, replace, hint)
        atomic_write_bytes(path, data)


def check_owned_file(path: str | Path, *, replace: bool = True, hint: str = "") -> None:
    """Refuse before any work what ``write_owned_file`` would refuse after it."""
    path = Path(path)
    record = OwnedFolder.read_record(path.parent) or {"files": []}
    refuse_if_foreign(path, record["files"] if path.is_file() and not path.is_symlink() else ())
    _check_single(path, replace, hint)


def refuse_if_foreign(path: Path, owned) -> None:
    """Refuse ``path`` when something is there that is not among the names the toolkit wrote
    (``owned``): the user's file, never replaced."""
    if (path.exists() or path.is_symlink()) and path.name not in owned:
        raise PoseMachinesError(
            f"{path} was not written by posemachines and is left alone; move it or write "
            "somewhere else"
        )


def _check_single(path: Path, replace: bool, hint: str) -> None:
    if not replace and (path.exists() or path.is_symlink()):
        raise PoseMachinesError(f"{path} exists; {hint or 'choose another name'}")
