"""The distribution-alignment methods beyond the paper's: sliced Wasserstein, Gaussian W2, CORAL and
multi-bandwidth MMD, each against an independent NumPy/SciPy computation (M != M' throughout)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from nst_jax import losses
from nst_jax.losses import wasserstein

RNG = np.random.default_rng(11)
X = RNG.normal(size=(37, 5)).astype(np.float32)
Y = (RNG.normal(size=(23, 5)) * np.array([1.5, 0.5, 1.0, 2.0, 0.7]) + 0.4).astype(np.float32)


def np_cov(z):
    z = np.asarray(z, np.float64)
    zc = z - z.mean(0)
    return zc.T @ zc / len(z)


def np_swd(x, y, p):
    """Double loop over directions and ranks; y's quantiles by np.interp (levels (j + 0.5) / M', clamped)."""
    x, y, p = (np.asarray(a, np.float64) for a in (x, y, p))
    m, mp = len(x), len(y)
    total = 0.0
    for k in range(p.shape[1]):
        sx, sy = np.sort(x @ p[:, k]), np.sort(y @ p[:, k])
        for i in range(m):
            q = np.interp((i + 0.5) / m, (np.arange(mp) + 0.5) / mp, sy)
            total += (sx[i] - q) ** 2
    return total / (m * p.shape[1])


def np_w2(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    cx, cy = np_cov(x), np_cov(y)
    s = scipy.linalg.sqrtm(cy).real
    cross = scipy.linalg.sqrtm(s @ cx @ s).real
    return np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(cx) + np.trace(cy) - 2 * np.trace(cross)


def np_mk_mmd(x, y, gammas, unbiased=False):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

    def k(a, b):
        d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.mean([np.exp(-g * d) for g in gammas], axis=0)

    def self_mean(a):
        kk = k(a, a)
        if unbiased:
            return (kk.sum() - np.trace(kk)) / (len(a) * (len(a) - 1))
        return kk.mean()

    return self_mean(x) + self_mean(y) - 2 * k(x, y).mean()


def unit_columns(n, k, seed):
    p = np.random.default_rng(seed).normal(size=(n, k))
    return (p / np.linalg.norm(p, axis=0)).astype(np.float32)


class TestSWD:
    def test_fixed_projections_equal_the_reference(self):
        p = unit_columns(5, 7, 0)
        got = jax.jit(lambda x, y, p: losses.sliced_wasserstein(x, y, projections=p))(X, Y, p)
        np.testing.assert_allclose(got, np_swd(X, Y, p), rtol=2e-5)
        # M == M': plain sorting.
        np.testing.assert_allclose(losses.sliced_wasserstein(X[:23], Y, projections=p), np_swd(X[:23], Y, p),
                                   rtol=2e-5)
        assert float(losses.sliced_wasserstein(X, X, projections=p)) == 0.0

    def test_the_cpu_sort_gives_the_stable_order_and_gradient_of_xla_sort(self):
        # On a CPU the order comes from NumPy (a callback); it must be XLA's stable order, ties included (ReLU
        # features project to many exact zeros), batched under vmap, and the gradient jnp.sort's.
        z = jnp.maximum(jax.random.normal(jax.random.key(3), (4, 257, 9)), 0.0).at[:, 5:40, 2].set(0.0)
        z = z.at[:, 10:20, 2].set(-0.0).at[:, 50:60, 4].set(-1.5).at[:, 100:103, 4].set(jnp.inf)
        host = jax.jit(jax.vmap(wasserstein._host_order))(z)
        np.testing.assert_array_equal(host, jax.vmap(lambda a: jnp.argsort(a, axis=0, stable=True))(z))
        np.testing.assert_array_equal(jax.jit(wasserstein.column_order)(z[0]), host[0])  # the CPU branch
        weights = jnp.arange(257.0)[:, None]
        mine = jax.jit(jax.grad(lambda a: jnp.sum(wasserstein.sort_columns(a) ** 2 * weights)))(z[1])
        xla = jax.jit(jax.grad(lambda a: jnp.sum(jnp.sort(a, axis=0) ** 2 * weights)))(z[1])
        np.testing.assert_array_equal(mine, xla)
        # NumPy alone, against its own stable argsort (-0.0 made 0.0 as XLA does): large columns too.
        a = np.maximum(np.random.default_rng(0).standard_normal((3000, 5)), 0).astype(np.float32)
        np.testing.assert_array_equal(wasserstein.stable_order(a), np.argsort(a + 0.0, axis=0, kind="stable"))

    @pytest.mark.slow
    def test_random_directions_converge_to_the_sphere_average(self):
        # The reference: the same distance averaged over 20000 directions drawn by NumPy.
        reference = np_swd(X[:20], Y[:15], unit_columns(5, 20000, 1))
        fn = jax.jit(lambda k: losses.sliced_wasserstein(X[:20], Y[:15], key=k, num_projections=64))
        estimates = [float(fn(jax.random.key(i))) for i in range(60)]
        assert np.mean(estimates) == pytest.approx(reference, rel=0.03)
        assert np.std(estimates) > 0  # fresh directions per key

    def test_default_count_is_the_channels_and_errors(self):
        d = losses.sliced_wasserstein(X, Y, key=jax.random.key(0))
        p = losses.wasserstein.random_directions(jax.random.key(0), 5, 5)
        assert float(d) == float(losses.sliced_wasserstein(X, Y, projections=p))
        with pytest.raises(ValueError, match="projections or a key"):
            losses.sliced_wasserstein(X, Y)
        with pytest.raises(ValueError, match="projections must be"):
            losses.sliced_wasserstein(X, Y, projections=jnp.ones((4, 2)))

    def test_method_gradient_is_finite_and_moves_toward_the_style(self):
        method = losses.SWD(num_projections=16)
        target = method.target(jnp.asarray(Y))
        g = jax.grad(lambda x: method.loss(x, target, key=jax.random.key(2)))(jnp.asarray(X))
        assert np.all(np.isfinite(g))
        stepped = jnp.asarray(X) - 2.0 * g
        p = unit_columns(5, 64, 3)
        assert losses.sliced_wasserstein(stepped, Y, projections=p) < losses.sliced_wasserstein(X, Y, projections=p)


class TestW2:
    def test_against_scipy_sqrtm(self):
        np.testing.assert_allclose(jax.jit(losses.w2_gaussian)(X, Y), np_w2(X, Y), rtol=1e-4)

    def test_symmetric_and_zero_for_equal_samples(self):
        np.testing.assert_allclose(losses.w2_gaussian(X, Y), losses.w2_gaussian(Y, X), rtol=1e-4)
        assert abs(float(losses.w2_gaussian(Y, Y))) < 1e-4 * float(np.trace(np_cov(Y)))

    def test_diagonal_covariances_closed_form(self):
        # Independent channels: W2^2 = ||mu_x - mu_y||^2 + sum_c (sd_x,c - sd_y,c)^2.
        a = np.diag([1.0, 4.0, 0.25]).astype(np.float32)
        base = np.asarray(np.random.default_rng(5).normal(size=(4000, 3)), np.float32)
        base = (base - base.mean(0)) / base.std(0)
        cx = np_cov(base)
        base = base @ np.linalg.inv(np.linalg.cholesky(cx)).T.astype(np.float32)  # exactly white
        x, y = base * 1.0 + 1.0, base @ a
        sd_x, sd_y = np.ones(3), np.diag(a)
        expected = np.sum((x.mean(0) - y.mean(0)) ** 2) + np.sum((sd_x - sd_y) ** 2)
        np.testing.assert_allclose(losses.w2_gaussian(x, y), expected, rtol=1e-3)

    @pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # the reference's sqrtm of singular input
    @pytest.mark.parametrize("case", ["fewer samples than channels", "dead channel", "constant style"])
    def test_gradient_finite_for_rank_deficient_inputs(self, case):
        x, y = X.copy(), Y.copy()
        if case == "fewer samples than channels":
            x, y = X[:3], Y[:2]
        elif case == "dead channel":
            x[:, 1] = 0.0
            y[:, 1] = 0.0
        else:
            y = np.ones_like(Y)
        method = losses.W2()
        target = method.target(jnp.asarray(y))
        value, g = jax.value_and_grad(lambda z: method.loss(z, target))(jnp.asarray(x))
        assert np.isfinite(value) and np.all(np.isfinite(g)), case
        np.testing.assert_allclose(value, np_w2(x, y), rtol=1e-3, atol=1e-4)

    def test_sums_equal_samples(self):
        method = losses.W2()
        target = method.target(jnp.asarray(Y))
        sums = method.sums(jnp.asarray(X), target, jnp.ones(37))
        np.testing.assert_allclose(method.loss_from_sums(losses.SampleSums(sums, 37), target),
                                   method.loss(jnp.asarray(X), target), rtol=1e-5)


class TestCORAL:
    def test_against_numpy(self):
        expected = np.sum((np_cov(X) - np_cov(Y)) ** 2) / (4 * 5 * 5)
        np.testing.assert_allclose(jax.jit(losses.coral)(X, Y), expected, rtol=1e-5)

    def test_is_the_gram_loss_of_centred_samples(self):
        np.testing.assert_allclose(losses.coral(X, Y), losses.gram_loss(X - X.mean(0), Y - Y.mean(0)), rtol=1e-5)

    def test_gradient_finite_with_constant_channels_and_sums(self):
        method = losses.CORAL()
        y = Y.copy()
        y[:, 0] = 3.0
        target = method.target(jnp.asarray(y))
        assert np.all(np.isfinite(jax.grad(lambda z: method.loss(z, target))(jnp.asarray(np.zeros_like(X)))))
        sums = method.sums(jnp.asarray(X), target, jnp.ones(37))
        np.testing.assert_allclose(method.loss_from_sums(losses.SampleSums(sums, 37), target),
                                   method.loss(jnp.asarray(X), target), rtol=1e-5)


class TestMKMMD:
    GAMMAS = (0.05, 0.2, 0.8)

    @pytest.mark.parametrize("estimator", ["full", "unbiased"])
    def test_several_bandwidths_against_numpy(self, estimator):
        got = losses.mmd2(X, Y, kernel="gaussian", gamma=self.GAMMAS, estimator=estimator)
        np.testing.assert_allclose(got, np_mk_mmd(X, Y, self.GAMMAS, estimator == "unbiased"), rtol=1e-4, atol=1e-6)

    @pytest.mark.parametrize("estimator", ["full", "unbiased", "linear", pytest.param("rff", marks=pytest.mark.slow)])
    def test_one_bandwidth_is_the_gaussian(self, estimator):
        key = jax.random.key(4)
        one = losses.mmd2(X, Y, kernel="gaussian", gamma=(0.3,), estimator=estimator, key=key)
        plain = losses.mmd2(X, Y, kernel="gaussian", gamma=0.3, estimator=estimator, key=key)
        if estimator == "rff":  # other frequency draws, the same expectation
            keys = [jax.random.key(i) for i in range(40)]
            one = np.mean([losses.mmd2(X, Y, kernel="gaussian", gamma=(0.3,), estimator="rff", key=k) for k in keys])
            plain = np.mean([losses.mmd2(X, Y, kernel="gaussian", gamma=0.3, estimator="rff", key=k) for k in keys])
            np.testing.assert_allclose(one, plain, rtol=0.1, atol=2e-3)
        else:
            np.testing.assert_allclose(one, plain, rtol=1e-6)

    @pytest.mark.slow
    def test_rff_and_linear_estimate_the_full_value(self):
        full = np_mk_mmd(X, Y, self.GAMMAS, unbiased=True)
        rff = np.mean([losses.mmd2(X, Y, kernel="gaussian", gamma=self.GAMMAS, estimator="rff",
                                   key=jax.random.key(i), num_features=512) for i in range(40)])
        lin = np.mean([losses.mmd2(X, Y, kernel="gaussian", gamma=self.GAMMAS, estimator="linear",
                                   key=jax.random.key(i)) for i in range(300)])
        np.testing.assert_allclose(rff, np_mk_mmd(X, Y, self.GAMMAS), rtol=0.1)
        np.testing.assert_allclose(lin, full, rtol=0.25)

    def test_method_with_scale_one_is_the_gaussian_method(self):
        for estimator in ("full", "linear"):
            mk, gauss = losses.MKMMD(scales=(1.0,), estimator=estimator), losses.Gaussian(estimator=estimator)
            key = jax.random.key(6)
            np.testing.assert_allclose(mk.loss(jnp.asarray(X), mk.target(jnp.asarray(Y)), key=key),
                                       gauss.loss(jnp.asarray(X), gauss.target(jnp.asarray(Y)), key=key), rtol=1e-6)
        assert mk.paper_scale(64, 8) == gauss.paper_scale(64, 8)

    def test_scales_must_be_positive(self):
        with pytest.raises(ValueError, match=r"scales=\(1.0, 0.0\): expected positive numbers"):
            losses.MKMMD(scales=(1.0, 0.0))
