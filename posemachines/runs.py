"""Run directories: ``runs/forest-1``, ``runs/forest-2``, ... when no ``--out`` is given."""

from __future__ import annotations

import re
from pathlib import Path


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


def latest_run(prefix: str, root: str | Path = "runs") -> Path | None:
    """The highest-numbered ``root/prefix-N`` that holds a finished model, or None."""
    for _, path in reversed(_numbered(Path(root), prefix)):
        if (path / "manifest.json").is_file():
            return path
    return None
