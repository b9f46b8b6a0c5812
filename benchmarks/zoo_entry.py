"""Make a zoo entry from a finished training run: score it on LSP test (recorded in its
manifest), time it with `pm bench`, and copy the model's files into posemachines/zoo/NAME
with zoo.json (the commands that made it, the data it saw and its terms, its speed).

    python benchmarks/zoo_entry.py RUN NAME --data-root ../shared/data \
        --command "pm train ..." [--pack-command "pm data pack ..."]

Prints the scores, the sizes and the speed it records. The run folder is left as it was but
for the scores in its manifest.
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "posemachines" / "zoo"
DATA = (
    "LSP train (images 1-1000) and, for CNN entries, LSP Extended (images 1-9000), from the "
    "data root's lsp/ and lspet/; never LSP test (1001-2000), on which it is scored."
)


def pm(*args: str) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "pm"), *args], capture_output=True, text=True
    )
    if done.returncode:
        sys.exit(f"pm {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("name")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--command", required=True, help="the pm train command that made it")
    parser.add_argument("--pack-command", default=None, help="the pm data pack command, if any")
    parser.add_argument("--timing-images", default="50")
    args = parser.parse_args()

    lsp = ("--dataset", "lsp", "--split", "test", "--data-root", args.data_root)
    scores = json.loads(pm("evaluate", str(args.run), *lsp, "--json").strip().splitlines()[-1])
    bench = pm("bench", str(args.run), *lsp, "--timing-images", args.timing_images, "--device",
               "cpu")  # fmt: skip
    timed = json.loads(bench.strip().splitlines()[-1])["runtimes"]
    ms = {runtime: round(t["ms_per_image"], 1) for runtime, t in timed.items()}
    manifest = json.loads((args.run / "manifest.json").read_text())
    from posemachines.zoo import DATA_TERMS

    target = ZOO / args.name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    for name in ["manifest.json", *manifest["sha256"], "train_log.jsonl"]:
        if (args.run / name).is_file():
            shutil.copy2(args.run / name, target / name)
    info = {
        "name": args.name,
        "command": args.command,
        "pack_command": args.pack_command,
        "rebuild": "train with the commands above (a data root holding lsp/ and lspet/), then "
        f"python benchmarks/zoo_entry.py RUN {args.name} --data-root ROOT --command '...'",
        "data": DATA,
        "terms": DATA_TERMS,
        "lsp_test": {k: scores["metrics"][k] for k in ("pck@0.2", "pck@0.1", "pckh@0.5", "pcp")},
        "ms_per_image": ms,
        "ms_measured_on": "the 2-core development machine (pm bench, batch 1, CPU)",
        "sha256": manifest["sha256"],
    }
    (target / "zoo.json").write_text(json.dumps(info, indent=2) + "\n")
    size = sum(f.stat().st_size for f in target.iterdir()) / 1e6
    pck = ", ".join(f"{k} {100 * v:.1f}" for k, v in info["lsp_test"].items())
    print(f"{args.name}: LSP test {pck}; {size:.1f} MB; ms per image {ms}")


if __name__ == "__main__":
    main()
