"""The host's BLAS libraries run on one thread while a run's steps run (nst_jax/lapack.py), and only then."""

import numpy as np
import threadpoolctl

from configs import test as test_config
from nst_jax import config as config_lib
from nst_jax import demo, job, lapack, loop
from nst_jax import weights as weights_lib


def blas_threads() -> dict[str, int]:
    return {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}


def test_the_limit_covers_scipys_lapack_and_is_restored_on_exit():
    import scipy.linalg.cython_lapack  # noqa: F401  (loaded, so that the outer limit below covers it too)

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        with lapack.single_threaded():
            inside = blas_threads()
        after = blas_threads()
    # SciPy's library is the one JAX's CPU LAPACK calls (jaxlib takes its functions from scipy.linalg.cython_lapack).
    assert any("scipy" in path for path in inside), inside
    assert inside and set(inside.values()) == {1}, inside
    assert after == before and set(before.values()) == {2}, before


def test_a_run_computes_its_steps_under_the_limit_and_restores_it(random_weights):
    c = test_config.get_config()
    with c.unlocked():
        c.update(kernel="w2", size=16, steps=3, chunk=1, style_layers="relu1_1", layer_weights="1",
                 content_layers="relu1_1", balance="none", log_every=1)
    loaded = weights_lib.load(random_weights)
    rgb = np.asarray(demo.content_image(16), np.float32)
    seen = []

    def after_chunk(chunk: loop.Chunk) -> bool:
        seen.append(blas_threads())
        return False

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        ((_, record),) = job.run(config_lib.problem(c), config_lib.step_settings(c, loaded.source), 1,
                                 [job.JobInputs(config_lib.parse(c), rgb, [rgb[::-1]], "content", ["style"])], loaded,
                                 after_chunk=after_chunk)
        after = blas_threads()
    assert record["status"] == "done"
    assert len(seen) == 3  # one per step
    assert all(row and set(row.values()) == {1} for row in seen), seen
    assert set(after.values()) == {2}, after
