"""Memory of the mean prior against the size of its training set: it averages its targets
chunk by chunk, so the peak should stay flat as the data grows (it used to keep every crop and
every target map in memory: about 77 KB per sample at the default 160 px, 77 GB for a million).

    python benchmarks/mean_memory.py --sizes 1000 4000 16000

Prints, per size, the training time and the peak resident memory of the process and its
workers (sampled from /proc), and the ratio of the largest to the smallest peak.
"""

from __future__ import annotations

import argparse
import time

from memory import PeakMemory


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()

    from posemachines.api import train
    from posemachines.data import load_dataset

    peaks = []
    print("samples   seconds   peak GB")
    for n in args.sizes:
        data = load_dataset("synthetic", "train", size=n, seed=0)
        start = time.perf_counter()
        with PeakMemory(interval=0.2) as memory:
            train("mean", data, n_jobs=args.jobs)
        peaks.append(memory.peak_gb)
        print(f"{n:7d} {time.perf_counter() - start:9.1f} {memory.peak_gb:9.2f}")
    print(f"largest / smallest peak: {max(peaks) / min(peaks):.2f}")


if __name__ == "__main__":
    main()
