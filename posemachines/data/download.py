"""Downloading dataset archives: resumable, checksummed, into the cache directory.

A download goes to ``NAME.part`` first; an interrupted one resumes from where it stopped with an
HTTP Range request (or starts again if the server ignores ranges). The archive is renamed into
place only after its SHA-256 matches, then unpacked (refusing members that would land outside
the target folder) into ``CACHE/data/NAME/``, where the data-root lookup finds it.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from ..errors import PoseMachinesError
from ..files import sha256 as file_sha256
from . import default_cache_dir

# Where the datasets were published. No checksum was recorded for them here: a download
# without ``sha256`` prints the checksum it got so that the user can pin it.
SOURCES = {
    "lsp": "http://sam.johnson.io/research/lsp_dataset.zip",
    "lspet": "http://sam.johnson.io/research/lspet_dataset.zip",
}


def download(
    url: str,
    dest: str | Path,
    sha256: str | None = None,
    timeout: float = 30.0,
    progress: bool = False,
) -> Path:
    """Fetch ``url`` to ``dest``, resuming a previous partial download; verify ``sha256``."""
    from tqdm.auto import tqdm

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
                tqdm(
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
    """Unpack a .zip or .tar(.gz) archive into ``target`` through a temporary folder."""
    archive, target = Path(archive), Path(target)
    tmp = target.with_name(target.name + ".unpacking")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
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
    # An archive holding one top-level folder is unpacked from inside that folder.
    entries = list(tmp.iterdir())
    inner = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
    if target.exists():
        shutil.rmtree(target)
    os.replace(inner, target)
    shutil.rmtree(tmp, ignore_errors=True)
    return target


def fetch_dataset(
    name: str,
    url: str | None = None,
    sha256: str | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[Path, str]:
    """Download and unpack dataset ``name`` into ``CACHE/data/NAME``; returns (folder, sha256)."""
    if url is None:
        if name not in SOURCES:
            raise PoseMachinesError(f"no known source for {name!r}; pass --url")
        url = SOURCES[name]
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    archive = download(url, cache / "downloads" / Path(url).name, sha256, progress=progress)
    folder = unpack(archive, cache / "data" / name)
    if not (folder / "joints.mat").is_file():
        raise PoseMachinesError(f"{archive}: unpacked, but holds no joints.mat at its top level")
    return folder, file_sha256(archive)
