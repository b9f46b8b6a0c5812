"""Downloading dataset archives: resumable, checksummed, into the cache directory.

A dataset is one or more published archives (MPII: annotations and images; COCO: annotations
and one image archive per split). Each download goes to ``FILE.part`` first; an interrupted one
resumes from where it stopped with an HTTP Range request (or starts again if the server ignores
ranges). The archive is renamed into place only after its SHA-256 matches, then unpacked
(refusing members that would land outside the target folder) into its part of
``CACHE/data/NAME/``, where the data-root lookup finds it. A part already unpacked is kept and
not downloaded again unless the user asks to replace it.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path

from posemachines.data.registry import Archive, datasets, default_cache_dir
from posemachines.errors import PoseMachinesError
from posemachines.files.owned import sha256 as file_sha256


def download(
    url: str,
    dest: str | Path,
    sha256: str | None = None,
    timeout: float = 30.0,
    progress: bool = False,
) -> Path:
    """Fetch ``url`` to ``dest``, resuming a previous partial download; verify ``sha256``."""
    from posemachines.progress import progress_bar

    dest = Path(dest)
    if dest.is_file() and (sha256 is None or file_sha256(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = have and response.status == 206
            total = response.headers.get("Content-Length")
            total = int(total) + (have if resumed else 0) if total else None
            with (
                open(part, "ab" if resumed else "wb") as f,
                progress_bar(
                    total=total,
                    initial=have if resumed else 0,
                    unit="B",
                    unit_scale=True,
                    desc=dest.name,
                    disable=not progress,
                ) as bar,
            ):
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
            if total is not None and part.stat().st_size < total:
                raise OSError(f"connection closed after {part.stat().st_size} of {total} bytes")
    except (urllib.error.URLError, OSError) as exc:
        raise PoseMachinesError(
            f"download of {url} interrupted ({exc}); run the same command again to resume"
        ) from None
    got = file_sha256(part)
    if sha256 is not None and got != sha256:
        part.unlink()
        raise PoseMachinesError(f"{url}: checksum mismatch (expected {sha256}, got {got})")
    os.replace(part, dest)
    return dest


def _safe_members(names, target: Path):
    root = target.resolve()
    for name in names:
        if not (target / name).resolve().is_relative_to(root):
            raise PoseMachinesError(f"archive member {name!r} would be written outside {target}")


def unpack(archive: str | Path, target: str | Path) -> Path:
    """Unpack a .zip or .tar(.gz) archive into the new folder ``target``, through a temporary
    folder beside it; an archive holding one top-level folder is unpacked from inside it."""
    archive, target = Path(archive), Path(target)
    if target.exists():
        raise PoseMachinesError(f"{target} exists; it is kept (pass --overwrite to replace it)")
    tmp = target.with_name(target.name + ".unpacking")
    shutil.rmtree(tmp, ignore_errors=True)  # our own leftover from an interrupted unpack
    tmp.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                _safe_members(z.namelist(), tmp)
                z.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                _safe_members(t.getnames(), tmp)
                t.extractall(tmp, filter="data")
        else:
            raise PoseMachinesError(f"{archive}: not a zip or tar archive")
        entries = list(tmp.iterdir())
        inner = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        os.replace(inner, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def fetch_dataset(
    name: str,
    *,
    split: str | None = None,
    urls: Sequence[str] = (),
    sha256: Sequence[str] = (),
    cache_dir: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    say=print,
) -> Path:
    """Download and unpack dataset ``name`` into ``CACHE/data/NAME``, where the data-root lookup
    finds it; returns that folder.

    Parameters
    ----------
    name : str
        A registered dataset with download sources, or any name when ``urls`` are given.
    split : str, optional
        Only the archives this split needs (e.g. COCO's 1 GB ``val`` without its 18 GB
        ``train``); default all.
    urls, sha256 : sequence of str
        Other addresses (a mirror), and expected checksums, one per archive in the order
        the registry lists them.
    overwrite : bool
        Replace parts already unpacked; without it they are kept and not downloaded again.
    say : callable
        Where the checksums and progress lines go.
    """
    sources = {n: d.sources for n, d in datasets().items() if d.sources}
    archives = [a for a in sources.get(name, ()) if split is None or a.split in (None, split)]
    if urls:
        if archives and len(urls) != len(archives):
            names = ", ".join(a.file_name for a in archives)
            raise PoseMachinesError(
                f"{name} has {len(archives)} archive(s) ({names}); pass --url once for each, "
                "in that order"
            )
        if not archives and len(urls) != 1:
            raise PoseMachinesError(f"{name!r} is not a known dataset; pass one --url")
        archives = [
            Archive(u, a.into, a.split) for u, a in zip(urls, archives or [Archive(urls[0])])
        ]
    if not archives:
        known = ", ".join(sources)
        raise PoseMachinesError(f"no known source for {name!r} (known: {known}); pass --url")
    if sha256 and len(sha256) != len(archives):
        raise PoseMachinesError(f"pass --sha256 once for each of the {len(archives)} archive(s)")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    folder = cache / "data" / name
    for k, archive in enumerate(archives):
        target = folder / archive.into if archive.into else folder
        if target.exists() and any(target.iterdir()) and not overwrite:
            say(f"{target} already there, kept (--overwrite downloads it again)")
            continue
        expected = sha256[k] if sha256 else archive.sha256
        path = download(
            archive.url, cache / "downloads" / archive.file_name, expected, progress=progress
        )
        if expected:
            say(f"{archive.file_name}: sha256 {expected} verified")
        else:
            say(f"{archive.file_name}: sha256 {file_sha256(path)} (pin it with --sha256)")
        if target.exists():  # empty, or the user asked to replace it
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        unpack(path, target)
    if name in sources and not datasets()[name].present(folder):
        raise PoseMachinesError(f"{folder}: unpacked, but does not hold the {name} layout")
    return folder
