"""Progress that suits where it is read: a live bar on a terminal, one line per phase in a log.

A bar redrawn with carriage returns fills a log file, a pipe or a CI log with thousands of
updates; there each phase prints one line when it ends instead: what it did, how many, how
long (``mean: 400 img in 3.2 s``).
"""

from __future__ import annotations

import sys
import time


def progress_bar(iterable=None, *, total=None, desc="", unit="it", disable=False, **options):
    """A tqdm bar when standard error is a terminal, else a ``PhaseLine``; the same use either
    way (``update``, ``close``, iteration, ``with``)."""
    from tqdm.auto import tqdm

    if disable or _is_terminal():
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, **options)
    return PhaseLine(iterable, total, desc, unit, options.get("initial", 0))


def _is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced by something without a tty
        return False


class PhaseLine:
    """Counts like a bar and prints one line on stderr when closed."""

    def __init__(self, iterable, total, desc: str, unit: str, initial: int = 0):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self.start = initial
        self.started = time.perf_counter()
        self.closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.n += 1
        self.close()

    def __enter__(self) -> PhaseLine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def write(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        done = self.n - self.start
        if done:
            seconds = time.perf_counter() - self.started
            self.write(f"{self.desc}: {done} {self.unit} in {seconds:.1f} s")


def say(message: str) -> None:
    """A line of a run's log, printed between the redraws of any bar on the screen."""
    from tqdm.auto import tqdm

    tqdm.write(message)


def note(message: str) -> None:
    """Something the user should know about the work (a default chosen, files left out), as
    one line on the ``posemachines`` logger: ``pm`` shows it on stderr, a notebook as a
    warning. The library never prints."""
    import logging

    logging.getLogger("posemachines").warning(message)
