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

from .errors import PoseMachinesError


def workers(n_jobs: int, **options) -> Parallel:
    """``joblib.Parallel(n_jobs, **options)`` whose local worker processes exit within a
    second of the process that started them dying: a ``kill -9`` of ``pm train`` leaves no loky
    workers behind (they used to wait out loky's five-minute idle timeout)."""
    return Parallel(n_jobs=n_jobs, initializer=_watch_parent, initargs=(os.getpid(),), **options)


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
