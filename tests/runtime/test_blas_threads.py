import os

import pytest

from rad.runtime.blas_threads import blas_controller, one_blas_thread


def _blas_threads():
    return [lib["num_threads"] for lib in blas_controller().info() if lib["user_api"] == "blas"]


def test_one_blas_thread_limits_every_blas_library_and_restores_it():
    before = _blas_threads()
    assert before, "numpy / scipy load at least one BLAS library"
    if max(before) == 1 and (os.cpu_count() or 1) > 1:
        pytest.skip("BLAS already limited to one thread in this process (e.g. OPENBLAS_NUM_THREADS=1)")
    with one_blas_thread():
        assert _blas_threads() == [1] * len(before)
    assert _blas_threads() == before
