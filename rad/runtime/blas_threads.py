"""One BLAS thread for the numpy / scipy work of the training loop's own process.

The dominance step runs in the driver, the process of the training loop. Its fallback solver,
POT's L-BFGS on scipy, and every numpy call there run on OpenBLAS, which starts one thread per
core in a process that nothing else limits (Ray sets ``OMP_NUM_THREADS`` for actors only). On a
loaded 2-core machine, two BLAS threads made one call 1.375 s, against 0.0128 s with one
(issue 20; ``bench/dominance.py``). :func:`one_blas_thread` limits every BLAS library loaded in
this process to one thread for the duration of a block, and restores the previous limits
afterwards. Torch's intra-op threads are left alone.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

_controller = None


def blas_controller():
    """The process's :class:`threadpoolctl.ThreadpoolController`, made once after numpy, scipy and POT load
    (a controller sees only the libraries loaded before it was made)."""
    global _controller
    if _controller is None:
        import numpy  # noqa: F401
        import ot  # noqa: F401
        import scipy.optimize  # noqa: F401
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with every loaded BLAS library limited to one thread."""
    with blas_controller().limit(limits=1, user_api="blas"):
        yield
