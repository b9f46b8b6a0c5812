"""Crash safety by fault injection, as SQLite and RocksDB test themselves: the k-th file write
of a small training run is made to fail as a kill would leave it (part of the file under its
temporary name, nothing renamed, nothing cleaned up), for every k of the run; ``--resume``
must then give the very model an uninterrupted run gives, and leave no temporary behind.
"""

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from posemachines.cli.main import cli

import posemachines.files.owned as files

TEMPORARY = getattr(files, "TEMPORARY", ".pm-tmp-")  # how a file being written is named


class InjectedCrash(BaseException):
    """Raised at the chosen write: not an Exception, so nothing in the code handles it."""


@contextmanager
def crash_at_write(k: int | None):
    """Count the file writes (every atomic write, single or several at once); at the k-th,
    leave a torn temporary and raise ``InjectedCrash``. Yields the counter."""
    real_one, real_many = files.atomic_write, getattr(files, "atomic_write_many", None)
    count = {"writes": 0}

    def torn(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / f".{path.name}{TEMPORARY}torn").write_bytes(b"half a file")
        raise InjectedCrash

    def one(path, write):
        count["writes"] += 1
        if count["writes"] == k:
            torn(Path(path))
        return real_one(path, write)

    def many(folder, contents):
        count["writes"] += 1
        if count["writes"] == k:
            torn(Path(folder) / next(iter(contents)))
        return real_many(folder, contents)

    files.atomic_write, files.atomic_write_many = one, many
    try:
        yield count
    finally:
        files.atomic_write, files.atomic_write_many = real_one, real_many


def train(args, out: Path, resume: bool = False):
    extra = ["--resume"] if resume else []
    return CliRunner().invoke(cli, ["train", *args, "--out", str(out), *extra])


def weights(folder: Path) -> dict:
    """What makes the model: every weight file's checksum, the stages and the codec."""
    manifest = json.loads((folder / "manifest.json").read_text())
    return {k: manifest[k] for k in ("sha256", "stages", "codec", "num_stages", "networks")}


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMPORARY in p.name]


def check_every_write(args, tmp_path: Path) -> int:
    """Crash at every write of ``pm train ARGS`` in turn, resume, compare; the count."""
    with crash_at_write(None) as count:
        res = train(args, tmp_path / "whole")
    assert res.exit_code == 0, res.output
    expected, writes = weights(tmp_path / "whole"), count["writes"]
    assert writes >= 5
    for k in range(1, writes + 1):
        out = tmp_path / f"crash-{k}"
        with crash_at_write(k), pytest.raises(InjectedCrash):
            train(args, out)
        res = train(args, out, resume=True)
        assert res.exit_code == 0, f"write {k}: {res.output}"
        assert weights(out) == expected, f"crash at write {k} of {writes}: another model"
        assert not temporaries(out), f"write {k}: {temporaries(out)}"
        # a finished forest drops its checkpoint, a CNN keeps its last: as without the crash
        assert (out / "checkpoint").exists() == (tmp_path / "whole" / "checkpoint").exists()
    return writes


FOREST = ["--backend", "forest", "--dataset", "synthetic", "--synthetic-size", "8"]
FOREST += ["--stages", "3", "--trees", "2", "--depth", "6", "--folds", "2", "--jobs", "1"]


@pytest.mark.slow
def test_a_forest_run_killed_at_any_write_resumes_to_the_same_model(tmp_path):
    writes = check_every_write(FOREST, tmp_path)
    print(f"forest: {writes} crash points")


@pytest.mark.slow
def test_a_cnn_run_killed_at_any_write_resumes_to_the_same_model(tmp_path):
    pytest.importorskip("torch")
    args = ["--backend", "cnn", "--config", "cpm-tiny", "--dataset", "synthetic"]
    args += ["--synthetic-size", "16", "--epochs", "2", "--batch-size", "8", "--device", "cpu"]
    args += ["--checkpoint-every", "1", "--val-fraction", "0.25"]
    writes = check_every_write(args, tmp_path)
    print(f"cnn: {writes} crash points")


@pytest.mark.slow
def test_a_stack_run_killed_at_any_write_resumes_to_the_same_model(tmp_path):
    pytest.importorskip("torch")
    args = ["--stack", "cnn:1,forest:1", "--dataset", "synthetic", "--synthetic-size", "8"]
    args += ["--config", "cpm-tiny", "--epochs", "1", "--batch-size", "4", "--device", "cpu"]
    args += ["--trees", "2", "--depth", "6", "--folds", "2", "--jobs", "1"]
    writes = check_every_write(args, tmp_path)
    print(f"stack: {writes} crash points")


@pytest.mark.slow
def test_a_real_kill_inside_a_checkpoint_write_resumes_to_the_same_model(tmp_path):
    """The process really dies (os._exit, no clean-up of any kind) inside the second
    checkpoint's model write of a 3-stage forest: the old main resumed that into a 4-stage
    model."""
    whole = tmp_path / "whole"
    assert train(FOREST, whole).exit_code == 0
    script = (
        "import os, sys, posemachines.files.owned as f\n"
        "real, n = f.atomic_write, [0]\n"
        "def dying(path, write):\n"
        "    if 'checkpoint' in str(path) and path.name.startswith('stage2'):\n"
        "        n[0] += 1\n"
        "        if n[0] == 1:\n"
        "            open(os.path.join(os.path.dirname(path), '.x.pm-tmp-'), 'wb')\n"
        "            os._exit(9)\n"
        "    return real(path, write)\n"
        "f.atomic_write = dying\n"
        "from posemachines.cli.main import cli\n"
        "cli(sys.argv[1:])\n"
    )
    out = tmp_path / "killed"
    proc = subprocess.run(
        [sys.executable, "-c", script, "train", *FOREST, "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 9, proc.stderr[-2000:]
    res = train(FOREST, out, resume=True)
    assert res.exit_code == 0, res.output
    assert "resuming after stage 1" in res.output
    assert weights(out) == weights(whole)
    assert json.loads((out / "manifest.json").read_text())["num_stages"] == 3
    assert not temporaries(out)
