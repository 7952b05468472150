"""A chunk's random permutations drawn once ahead of its unrolled steps (nst_jax.losses.draws): the same
draws as each step's own, the report's included, and one copy of the draws in the compiled program."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import test as test_config
from nst_jax import config as config_lib
from nst_jax import transfer, vgg
from nst_jax.losses import draws


def test_replay_gives_the_recorded_draws_and_refuses_another_computation():
    key = jax.random.key(3)

    def two(k):
        kx, ky = jax.random.split(k)
        return draws.permutation(kx, 7), draws.permutation(ky, 5)

    with draws.recording() as drawn:
        want = two(key)
    assert [a.shape for a in drawn] == [(7,), (5,)]
    np.testing.assert_array_equal(want[0], jax.random.permutation(jax.random.split(key)[0], 7))
    table = [jnp.arange(7)[::-1], jnp.arange(5)]  # anything of the recorded shapes is replayed as is
    with draws.replaying(table):
        got = two(jax.random.key(99))
    np.testing.assert_array_equal(got[0], table[0])
    np.testing.assert_array_equal(got[1], table[1])
    with draws.replaying(None):  # nothing to replay: drawn from the key
        np.testing.assert_array_equal(two(key)[1], want[1])
    with pytest.raises(RuntimeError, match="more permutations"), draws.replaying(table[:1]):
        two(key)
    with pytest.raises(RuntimeError, match="drew 1 permutations, its recording 2"), draws.replaying(table):
        draws.permutation(key, 7)
    with pytest.raises(RuntimeError, match="permutation of 5 rows"), draws.replaying([table[0], table[0]]):
        two(key)
    np.testing.assert_array_equal(draws.permutation(key, 7), jax.random.permutation(key, 7))  # outside: JAX's


@pytest.fixture(scope="module")
def gaussian_run(random_params):
    c = test_config.get_config()
    c.kernel = "linear+gaussian"  # the Gaussian draws, the linear method does not
    c.steps = 2  # ends inside the chunks below: the report's row is then not the table's last
    problem, settings = config_lib.problem(c), config_lib.step_settings(c, "torchvision")
    params = random_params
    rgb = jax.random.uniform(jax.random.key(1), (24, 20, 3), jnp.float32)
    x = jax.random.uniform(jax.random.key(2), (24, 20, 3), jnp.float32)
    tgt = transfer.targets(problem, params, rgb, [rgb[::-1, ::-1]])
    scales = {"content": jnp.float32(1.0),
              "style": {(t, n): jnp.float32(1.0) for t in range(2) for n in problem.style_layers}}
    return problem, settings, params, tgt, scales, x


def _chunk(problem, settings, length, unroll):
    return jax.jit(lambda s, p, t, sc, k: transfer.chunk(problem, settings, length, s, p, t, sc, k, unroll=unroll,
                                                         report=True))


@pytest.mark.slow
def test_unrolled_chunk_equals_the_loop_that_draws_in_each_step(gaussian_run):
    """Unrolled (the table) against the scan (each step draws its own): the same pairs, so the same energies
    and image up to the two programs' rounding; different pairs would differ by percents. The report, at
    step 2 of a 3-step chunk, against the energy computed on its own with step 2's key."""
    problem, settings, params, tgt, scales, x = gaussian_run
    key = jax.random.key(5)
    state0 = transfer.init_state(problem, settings, x)
    out = {u: _chunk(problem, settings, 3, u)(state0, params, tgt, scales, key) for u in (True, False)}
    (s_u, terms_u, now_u), (s_s, terms_s, now_s) = out[True], out[False]
    assert int(s_u.step) == 2
    for name in terms_u:
        np.testing.assert_allclose(terms_u[name][:2], terms_s[name][:2], rtol=1e-5, err_msg=name)
        assert np.isnan(terms_u[name][2])
    np.testing.assert_allclose(s_u.x, s_s.x, atol=1e-5)
    np.testing.assert_allclose(now_u["total"], now_s["total"], rtol=1e-5)
    value, alone = jax.jit(lambda y: transfer.energy(problem, params, tgt, scales, y, jax.random.fold_in(key, 2)))(
        s_u.x)
    np.testing.assert_allclose(now_u["total"], value, rtol=1e-6)
    np.testing.assert_allclose(now_u["style:gaussian"], alone["style:gaussian"], rtol=1e-6)
    # and not what another step's draws give: the check can tell draws apart
    other, _ = transfer.energy(problem, params, tgt, scales, s_u.x, jax.random.fold_in(key, 3))
    assert abs(float(other) / float(value) - 1) > 1e-4


def _sorts(problem, settings, length, state, params, tgt, scales, key) -> int:
    text = _chunk(problem, settings, length, True).lower(state, params, tgt, scales, key).compile().as_text()
    return len(re.findall(r"\bsort\(", text))


@pytest.mark.slow
def test_unrolled_chunk_compiles_its_draws_once(gaussian_run):
    """Each permutation is a sort-based shuffle: a 3-step chunk with its report holds as many sorts as a
    1-step one (the draws' loop body), not three or four times as many."""
    problem, settings, params, tgt, scales, x = gaussian_run
    state = transfer.init_state(problem, settings, x)
    args = (state, params, tgt, scales, jax.random.key(0))
    one, three = _sorts(problem, settings, 1, *args), _sorts(problem, settings, 3, *args)
    # relu1_1's 480 rows take one shuffle round, so at least one sort per permutation: 2 per style layer
    assert one >= 2 * len(problem.style_layers)
    assert three == one


def test_vgg_is_traced_once_per_shape(random_params):
    """vgg.extract is jitted: a second call with the same shapes and options reuses the trace."""
    x = jnp.zeros((1, 16, 16, 3), jnp.float32)
    vgg.extract(random_params, x, ["relu1_1"])
    before = vgg._apply._cache_size()
    vgg.extract(random_params, x + 1, ["relu1_1"])
    assert vgg._apply._cache_size() == before
    vgg.extract(random_params, x, ["relu2_1"])
    assert vgg._apply._cache_size() == before + 1
