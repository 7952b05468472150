"""The host's LAPACK during a run: one thread.

On a CPU, JAX's symmetric eigendecompositions (``jnp.linalg.eigh``: W2's matrix square roots, every step) call
the LAPACK that SciPy ships (OpenBLAS), inside one operation of the compiled program. XLA:CPU meanwhile runs
the program's independent operations side by side on its own thread pool, one thread per core, and OpenBLAS
starts as many threads again, which spin while they wait, so an ``eigh`` inside the step takes several times its
time alone. Alone, ``eigh`` of a 512 x 512 matrix is about as fast on one thread as on two, most of its time
being the memory-bound reduction to tridiagonal form. So runs limit the BLAS libraries to one thread while they
run (docs/performance.md, "The host's BLAS on one thread").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import threadpoolctl


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Limits every BLAS library loaded in the process (SciPy's, which JAX's CPU LAPACK calls, and NumPy's)
    to one thread for the duration; restores their thread counts on exit.

    SciPy's LAPACK is loaded first (JAX loads it itself on its first CPU decomposition, which may come after
    the limit is set: the limit applies only to libraries loaded when it is entered).
    """
    import scipy.linalg.cython_lapack  # noqa: F401  (loads the library JAX's CPU LAPACK calls)

    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        yield
