"""Where joblib's work runs: local worker processes that never outlive ``pm``, or a dask cluster.

Feature extraction, crop reading and out-of-fold prediction go through :func:`workers` (a
``joblib.Parallel``); the forests' trees are fitted through scikit-learn, which uses
joblib too. Inside :func:`dask_backend` all of it is sent to a ``dask.distributed`` scheduler
instead. Seeds are drawn before any work is shared out, so a model trained on a cluster is the
same, array for array, as one trained here.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager

from joblib import Parallel

from posemachines.errors import PoseMachinesError


def workers(n_jobs: int, **options) -> Parallel:
    """``joblib.Parallel(n_jobs, **options)`` whose local worker processes exit within a
    second of the process that started them dying: a ``kill -9`` of ``pm train`` leaves no loky
    workers behind (they used to wait out loky's five-minute idle timeout). The shared-memory
    folders such a killed process left are removed the next time workers start."""
    sweep_orphaned_memmaps()
    return Parallel(n_jobs=n_jobs, initializer=_watch_parent, initargs=(os.getpid(),), **options)


def sweep_orphaned_memmaps(folder: str = "/dev/shm") -> int:
    """Remove joblib's memory-mapping folders whose process is gone (a killed run cannot
    remove its own); how many. Only folders of this user, named with a process id, go."""
    import re
    import shutil

    pattern = re.compile(r"^joblib_memmapping_folder_(\d+)_")
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        match = pattern.match(entry.name)
        if not match or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
        except OSError:
            continue
        if not _alive(int(match.group(1))):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watch_parent(owner: int) -> None:
    """Run at the start of each loky worker (dask and the threading backend ignore it)."""
    if os.getppid() != owner:  # not a process that ``owner`` started itself
        return

    def watch():
        while os.getppid() == owner:
            time.sleep(0.5)
        os._exit(1)  # the parent died: nobody will read what this worker computes

    threading.Thread(target=watch, name="posemachines-parent-watch", daemon=True).start()


@contextmanager
def dask_backend(address: str | None, *, timeout: float = 10.0):
    """Run the joblib work inside on the ``dask.distributed`` scheduler at ``address``.

    Parameters
    ----------
    address : str or None
        The scheduler, e.g. ``tcp://10.0.0.5:8786``; None runs everything on this machine.
    timeout : float, keyword-only
        Seconds to wait for the scheduler before giving up with a one-line error.
    """
    if address is None:
        yield None
        return
    try:
        import joblib
        from distributed import Client
    except ImportError:
        raise PoseMachinesError(
            "--dask needs dask.distributed: pip install 'posemachines[dask]'"
        ) from None
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PoseMachinesError(
            f"cannot reach the dask scheduler at {address} ({reason}); start one with "
            "`dask scheduler` and workers with `dask worker ADDRESS`, or check the address"
        ) from None
    try:
        with client.as_current(), joblib.parallel_config(backend="dask"):
            yield client
    finally:
        client.close()
