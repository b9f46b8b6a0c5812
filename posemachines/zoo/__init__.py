"""The model zoo: trained models shipped inside the package, so that a real person is seen
with no training and no download (no link that can die).

Each entry is an ordinary model directory in this folder: the same manifest, SHA-256 of every
file and loaders as any model (nothing unpickled), and beside them ``zoo.json``: the commands
that rebuilt it, the data it saw and that data's terms, its speed where it was made. ``ENTRIES``
is the table of names; a name goes wherever a model directory does (``resolve``), and a folder
of the user's with the same name wins.
"""

from __future__ import annotations

import json
from pathlib import Path

from posemachines.errors import PoseMachinesError

ZOO_DIR = Path(__file__).resolve().parent

# name -> one line on what it is. Only entries whose folder is shipped are listed.
ENTRIES = {
    "forest-lsp": "the 2014 Pose Machine: 3 random-forest stages (45 trees each), LSP train",
    "cpm-cpu-lsp": "a Convolutional Pose Machine for CPUs (cpm-cpu: 160 px, 4 stages), LSP + LSPET",
}
DEFAULT_CNN = "cpm-cpu-lsp"  # what `pm predict photo.jpg` and `pm serve` use with no model

DATA_TERMS = (
    "LSP and LSP Extended (Johnson & Everingham, BMVC 2010 and CVPR 2011) are released for "
    "research use; a model trained on them inherits that: research and teaching, cite the "
    "datasets' papers."
)


def entry_path(name: str) -> Path | None:
    """The folder of the zoo entry ``name``, or None when there is no such entry."""
    if name not in ENTRIES:
        return None
    folder = ZOO_DIR / name
    return folder if (folder / "manifest.json").is_file() else None


def names() -> list[str]:
    """The entries shipped in this installation."""
    return [n for n in ENTRIES if entry_path(n) is not None]


def resolve(spec: str | Path) -> tuple[Path, str | None]:
    """The model ``spec`` means, and a note for the reader (or None): a path that exists is
    itself (a user's folder named like a zoo entry wins, and the note says so), else the zoo
    entry of that name; anything else is one error line."""
    path = Path(spec)
    zoo = entry_path(str(spec)) if path.name == str(spec) else None
    if path.exists():
        note = f"{spec}: using your folder {path.resolve()}, not the zoo model" if zoo else None
        return path, note
    if zoo is not None:
        return zoo, None
    if str(spec) == DEFAULT_CNN:
        raise PoseMachinesError(
            f"the zoo's default CNN ({DEFAULT_CNN}) is not in this installation; give a model "
            "(pm models lists the zoo's)"
        )
    raise PoseMachinesError(
        f"{spec}: no such model directory, .onnx file or zoo model (pm models lists the zoo)"
    )


def info(name: str) -> dict:
    """``zoo.json`` of an entry: how it was made, the data it saw, its speed."""
    folder = entry_path(name)
    if folder is None:
        raise PoseMachinesError(f"{name}: no such zoo model (pm models lists them)")
    try:
        doc = json.loads((folder / "zoo.json").read_text())
    except (OSError, ValueError) as exc:
        raise PoseMachinesError(f"{folder}/zoo.json: unreadable ({exc})") from None
    return doc if isinstance(doc, dict) else {}


def is_zoo_path(path: str | Path) -> bool:
    """Whether ``path`` lies inside the zoo: shipped files that no command writes to."""
    return ZOO_DIR in Path(path).resolve().parents


LSP_KEY = "lsp:test:image"  # the evaluation `pm models` quotes


def table() -> list[dict]:
    """A row per shipped entry for `pm models`: name, backend, joints, size, LSP test PCK@0.2,
    ms per image on the machine it was made on, and the command that made it."""
    rows = []
    for name in names():
        folder = entry_path(name)
        manifest = json.loads((folder / "manifest.json").read_text())
        made = info(name)
        lsp = manifest.get("evaluations", {}).get(LSP_KEY, {}).get("metrics", {})
        rows.append(
            {
                "name": name,
                "summary": ENTRIES[name],
                "backend": manifest.get("backend"),
                "skeleton": manifest.get("skeleton"),
                "joints": len(manifest.get("joints", [])),
                "size_mb": round(sum(f.stat().st_size for f in folder.iterdir()) / 1e6, 1),
                "lsp_test_pck@0.2": lsp.get("pck@0.2"),
                "ms_per_image": made.get("ms_per_image"),
                "command": made.get("command"),
                "path": str(folder),
            }
        )
    return rows


def names_a_model(spec: str | Path) -> bool:
    """Whether ``spec`` is a model rather than an input: a model directory, an exported
    .onnx file, or a zoo name that is no path here."""
    path = Path(spec)
    if path.exists():
        return (path / "manifest.json").is_file() or (path.suffix.lower() == ".onnx")
    return entry_path(str(spec)) is not None
