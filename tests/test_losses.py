"""Tests of nst_jax.losses and nst_jax.kernels against NumPy double loops (float64) on small inputs."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import kernels, losses

RTOL = 2e-4
ATOL = 1e-5


# ------------------------------------------------------------------------------------------------------------
# NumPy references


def np_kernel(kernel, a, b, c=1.0, d=2, gamma=None):
    if kernel == "linear":
        return float(a @ b)
    if kernel == "poly":
        return float((a @ b + c) ** d)
    return float(np.exp(-gamma * np.sum((a - b) ** 2)))


def np_mmd2(x, y, kernel, unbiased=False, **p):
    """V- or U-statistic by explicit double loops."""

    def mean_k(a, b, same):
        total, count = 0.0, 0
        for i in range(len(a)):
            for j in range(len(b)):
                if same and unbiased and i == j:
                    continue
                total += np_kernel(kernel, a[i], b[j], **p)
                count += 1
        return total / count

    return mean_k(x, x, True) + mean_k(y, y, True) - 2 * mean_k(x, y, False)


def np_pooled_gamma(x, y):
    """1 / mean squared distance over ordered pairs i != j of the pooled sample, by broadcasting."""
    z = np.concatenate([x, y])
    sq = np.sum((z[:, None, :] - z[None, :, :]) ** 2, axis=-1)
    p = len(z)
    return p * (p - 1) / sq.sum()


def np_paired_h(x0, x1, y0, y1, kernel, **p):
    """The official code's h, pair by pair, and its bandwidth when gamma is None."""
    if kernel == "gaussian" and p.get("gamma") is None:
        n0 = 2 * len(x0)
        dist = np.sum((np.concatenate([x0, y0, x0, y0]) - np.concatenate([x1, y1, y1, x1])) ** 2)
        p = dict(p, gamma=n0 * 2 / dist)
    h = 0.0
    for k in range(len(x0)):
        h += (np_kernel(kernel, x0[k], x1[k], **p) + np_kernel(kernel, y0[k], y1[k], **p)
              - np_kernel(kernel, x0[k], y1[k], **p) - np_kernel(kernel, y0[k], x1[k], **p))
    return h


def samples(seed, m, n, shift=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(m, n)) * scale + shift).astype(np.float32)


X = samples(0, 13, 5)
Y = samples(1, 9, 5, shift=0.4, scale=1.3)
X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
KEY = jax.random.key(42)


jit_pairs = jax.jit(losses.linear_time_pairs)


@functools.cache
def jit_mmd2(kernel, estimator="full", block_size=512, **params):
    return jax.jit(functools.partial(losses.mmd2, kernel=kernel, estimator=estimator, block_size=block_size,
                                     **params))


# ------------------------------------------------------------------------------------------------------------
# Kernels and tiling


class TestKernels:
    def test_vector_kernels(self):
        cases = [("linear", {}), ("poly", {"c": 0.5, "d": 3}), ("poly", {"c": 1.0, "d": 2.5}),
                 ("gaussian", {"gamma": 0.3})]
        a, b = np.abs(X64[0]), np.abs(X64[1])  # a . b + c > 0 for the non-integer power
        a[0] = -a[0]
        got = jax.jit(lambda u, v: [kernels.get(name)(u, v, **p) for name, p in cases])(a.astype(np.float32),
                                                                                         b.astype(np.float32))
        for value, (name, p) in zip(got, cases, strict=True):
            np.testing.assert_allclose(value, np_kernel(name, a, b, **p), rtol=RTOL)

    def test_matrix_and_rowwise(self):
        k, r = jax.jit(lambda x, y: (kernels.matrix(kernels.gaussian, x, y, gamma=0.2),
                                     kernels.rowwise(kernels.poly, x[:9], y, c=1.0, d=2)))(X, Y)
        expected = np.array([[np_kernel("gaussian", a, b, gamma=0.2) for b in Y64] for a in X64])
        np.testing.assert_allclose(k, expected, rtol=RTOL)
        np.testing.assert_allclose(r, [np_kernel("poly", X64[i], Y64[i]) for i in range(9)], rtol=RTOL)

    @pytest.mark.parametrize("block_size,name,params", [(1, "gaussian", {"gamma": 0.2}),
                                                        (4, "poly", {"c": 1.0, "d": 3}),
                                                        (5, "gaussian", {"gamma": 0.2}),
                                                        (13, "gaussian", {"gamma": 0.2}),
                                                        (64, "linear", {})])
    def test_tiled_equals_untiled(self, block_size, name, params):
        k = kernels.get(name)

        @jax.jit
        def sums(x, y):
            kxy, kxx = kernels.matrix(k, x, y, **params), kernels.matrix(k, x, x, **params)
            return (kernels.pairwise_sum(k, x, y, block_size, **params), jnp.sum(kxy),
                    kernels.pairwise_sum(k, x, x, block_size, True, **params), jnp.sum(kxx) - jnp.trace(kxx))

        tiled, dense, tiled_u, dense_u = sums(X, Y)
        np.testing.assert_allclose(tiled, dense, rtol=RTOL)
        np.testing.assert_allclose(tiled_u, dense_u, rtol=RTOL)

    def test_tiled_gradient_equals_dense(self):
        def dense(x, y):
            return (jnp.mean(kernels.matrix(kernels.gaussian, x, x, gamma=0.2))
                    - 2 * jnp.mean(kernels.matrix(kernels.gaussian, x, y, gamma=0.2)))

        def tiled(x, y):
            return (kernels.pairwise_sum(kernels.gaussian, x, x, 4, gamma=0.2) / 13 ** 2
                    - 2 * kernels.pairwise_sum(kernels.gaussian, x, y, 4, gamma=0.2) / (13 * 9))

        g_tiled, g_dense = jax.jit(lambda x, y: (jax.grad(tiled)(x, y), jax.grad(dense)(x, y)))(X, Y)
        np.testing.assert_allclose(g_tiled, g_dense, rtol=1e-3, atol=1e-6)

    def test_errors(self):
        with pytest.raises(ValueError, match="unknown kernel 'rbf'"):
            kernels.get("rbf")
        with pytest.raises(ValueError, match="channel counts differ"):
            kernels.pairwise_sum(kernels.linear, X, Y[:, :4])
        with pytest.raises(ValueError, match="exclude_diagonal"):
            kernels.pairwise_sum(kernels.linear, X, Y, exclude_diagonal=True)
        with pytest.raises(ValueError, match="block_size"):
            kernels.pairwise_sum(kernels.linear, X, Y, block_size=0)


# ------------------------------------------------------------------------------------------------------------
# MMD^2


class TestMMD:
    def test_gram_theorem(self):
        # Gatys' loss written out with unnormalised Grams, per side normalised by its own M.
        n = X.shape[1]
        expected = np.sum((X64.T @ X64 / 13 - Y64.T @ Y64 / 9) ** 2) / (4 * n * n)
        got = jax.jit(losses.gram_loss)(X, Y)
        np.testing.assert_allclose(got, expected, rtol=RTOL)
        via_mmd = jit_mmd2("poly", c=0.0, d=2)(X, Y) / (4 * n * n)
        np.testing.assert_allclose(got, via_mmd, rtol=RTOL)
        np.testing.assert_allclose(via_mmd, np_mmd2(X64, Y64, "poly", c=0.0, d=2) / (4 * n * n), rtol=RTOL)
        # M == M': 1/(4 N^2 M^2) ||F^T F - S^T S||^2 exactly as in the paper.
        y = Y64[:, :][np.arange(13) % 9]
        paper = np.sum((X64.T @ X64 - y.T @ y) ** 2) / (4 * n * n * 13 ** 2)
        np.testing.assert_allclose(jax.jit(losses.gram_loss)(X, y.astype(np.float32)), paper, rtol=RTOL)

    def test_linear_is_squared_mean_distance(self):
        expected = np.sum((X64.mean(0) - Y64.mean(0)) ** 2)
        np.testing.assert_allclose(jit_mmd2("linear")(X, Y), expected, rtol=RTOL)

    def test_identical_samples(self):
        # x == y: the full estimator is 0 and no estimator's gradient (in x, y held fixed) is NaN or inf.
        cases = [("linear", "full", {}), ("poly", "full", {"c": 1.0, "d": 2}), ("gaussian", "full", {}),
                 ("gaussian", "unbiased", {}), ("gaussian", "linear", {})]

        @jax.jit
        def values_and_grads(x, key):
            out = [jax.value_and_grad(lambda a, k=k, e=e, p=p: losses.mmd2(a, x, kernel=k, estimator=e, key=key,
                                                                           **p))(x)
                   for k, e, p in cases]
            return out + [jax.value_and_grad(f)(x, x) for f in (losses.gram_loss, losses.bn_loss)]

        results = values_and_grads(X, KEY)
        for (kernel, estimator, _), (value, _) in zip(cases, results, strict=False):
            if estimator == "full":
                assert abs(float(value)) < 1e-5, kernel
        for value, grad in results:
            assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))

    @pytest.mark.parametrize("name,params", [("linear", {}), ("poly", {"c": 1.0, "d": 2}),
                                             ("poly", {"c": 0.0, "d": 2}), ("poly", {"c": 0.5, "d": 3}),
                                             ("gaussian", {"gamma": 0.2})])
    def test_against_double_loop(self, name, params):
        @jax.jit
        def both(x, y):
            out = []
            for unbiased in (False, True):
                estimator = "unbiased" if unbiased else "full"
                out.append((losses.mmd2(x, y, kernel=name, estimator=estimator, block_size=4, **params),
                            losses.mmd2_pairwise(x, y, kernel=name, unbiased=unbiased, block_size=5, **params)))
            return out

        for unbiased, (got, pairwise) in zip((False, True), both(X, Y), strict=True):
            expected = np_mmd2(X64, Y64, name, unbiased=unbiased, **params)
            np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
            # The closed forms (linear; poly d = 2) against the tiled pairwise path.
            np.testing.assert_allclose(got, pairwise, rtol=RTOL, atol=ATOL)

    def test_gaussian_paper_bandwidth(self):
        gamma = np_pooled_gamma(X64, Y64)
        got = jax.jit(lambda x, y: (losses.pooled_gamma(x, y), losses.mmd2(x, y, kernel="gaussian"),
                                    losses.mmd2(x, y, kernel="gaussian", estimator="unbiased")))(X, Y)
        np.testing.assert_allclose(got[0], gamma, rtol=RTOL)
        for unbiased, value in ((False, got[1]), (True, got[2])):
            expected = np_mmd2(X64, Y64, "gaussian", unbiased=unbiased, gamma=gamma)
            np.testing.assert_allclose(value, expected, rtol=RTOL, atol=ATOL)

    def test_pooled_bandwidth_of_large_offset_features(self):
        # ReLU features on the 0-255 scale: large means, small spread; the centred formula keeps precision.
        x, y = samples(2, 40, 8, shift=300.0), samples(3, 30, 8, shift=301.0)
        expected = np_pooled_gamma(x.astype(float), y.astype(float))
        np.testing.assert_allclose(jax.jit(losses.pooled_gamma)(x, y), expected, rtol=1e-3)

    @pytest.mark.parametrize("name,params", [("poly", {"c": 1.0, "d": 2}), ("gaussian", {})])
    def test_linear_estimator_against_pairs(self, name, params):
        x0, x1, y0, y1 = (np.asarray(a, np.float64) for a in jit_pairs(X, Y, KEY))
        assert x0.shape == (4, 5) and y1.shape == (4, 5)  # min(13 // 2, 9 // 2) pairs
        # The pairs are rows of X and Y, each used at most once.
        rows = [tuple(r) for r in np.concatenate([x0, x1]).astype(np.float32)]
        assert len(set(rows)) == 8 and all(r in {tuple(v) for v in X} for r in rows)
        expected = np_paired_h(x0, x1, y0, y1, name, **params) / len(x0)
        got = jit_mmd2(name, "linear", **params)(X, Y, key=KEY)
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)

    def test_linear_estimator_is_unbiased(self):
        # Conditional on the samples, E[linear estimate] over permutations is exactly the U-statistic.
        x, y = X[:8], Y[:8]
        f = jax.jit(jax.vmap(lambda x, y, k: losses.mmd2(x, y, kernel="gaussian", estimator="linear", key=k,
                                                         gamma=0.2), (None, None, 0)))
        draws = np.asarray(f(x, y, jax.random.split(jax.random.key(7), 4000)), np.float64)
        target = np_mmd2(x.astype(float), y.astype(float), "gaussian", unbiased=True, gamma=0.2)
        se = draws.std(ddof=1) / np.sqrt(draws.size)
        assert se > 0
        assert abs(draws.mean() - target) < 4 * se, (draws.mean(), target, se)
        # It is an estimate, not the V-statistic: the full estimator lies far outside that band here.
        assert abs(draws.mean() - np_mmd2(x.astype(float), y.astype(float), "gaussian", gamma=0.2)) > 4 * se

    @pytest.mark.slow
    def test_rff_approaches_full(self):
        # Paper bandwidth: the rff path's pooled gamma must match the full estimator's too.
        full = float(jit_mmd2("gaussian")(X, Y))
        keys = jax.random.split(jax.random.key(3), 8)
        errors = []
        for d in (32, 8192):
            f = jax.jit(jax.vmap(lambda x, y, k, d=d: losses.mmd2(x, y, kernel="gaussian", estimator="rff", key=k,
                                                                  num_features=d), (None, None, 0)))
            errors.append(np.mean(np.abs(np.asarray(f(X, Y, keys)) - full)))
        assert errors[1] < errors[0] / 4
        assert errors[1] < 0.02 * full, (errors, full)

    def test_full_is_permutation_invariant(self):
        f = jax.jit(lambda x, y: (losses.mmd2(x, y, kernel="poly", c=0.5, d=3, block_size=4),
                                  losses.mmd2(x, y, kernel="gaussian", block_size=4)))
        rng = np.random.default_rng(5)
        np.testing.assert_allclose(f(X[rng.permutation(13)], Y[rng.permutation(9)]), f(X, Y), rtol=RTOL)

    @pytest.mark.parametrize("estimator", ["full", "unbiased"])
    def test_traces_at_relu1_1_of_256px(self, estimator):
        # M^2 = 2^32 pairs: the normalisations must not be formed as int32 (traced only, nothing is computed).
        x = jax.ShapeDtypeStruct((256 * 256, 64), jnp.float32)
        out = jax.eval_shape(lambda x: (losses.mmd2(x, x, kernel="gaussian", estimator=estimator),
                                        losses.mmd2(x, x, kernel="linear", estimator=estimator)), x)
        assert out[0].shape == () and out[1].dtype == jnp.float32

    def test_errors(self):
        with pytest.raises(ValueError, match="channel counts differ"):
            losses.mmd2(X, Y[:, :3], kernel="linear")
        with pytest.raises(ValueError, match="unknown kernel 'rbf'"):
            losses.mmd2(X, Y, kernel="rbf")
        with pytest.raises(ValueError, match="unknown kernel 'Gaussian'"):
            losses.mmd2(X, Y, kernel="Gaussian")
        with pytest.raises(ValueError, match="unknown estimator 'biased'"):
            losses.mmd2(X, Y, kernel="linear", estimator="biased")
        for est in ("linear", "rff"):
            with pytest.raises(ValueError, match=f"the '{est}' estimator .* needs a key"):
                losses.mmd2(X, Y, kernel="gaussian", estimator=est)
        with pytest.raises(ValueError, match="rff estimator needs the gaussian kernel, got kernel 'poly'"):
            losses.mmd2(X, Y, kernel="poly", estimator="rff", key=KEY)
        with pytest.raises(ValueError, match="unknown parameter.*gamma.*kernel 'poly'"):
            losses.mmd2(X, Y, kernel="poly", gamma=1.0)
        with pytest.raises(ValueError, match="num_features"):
            losses.mmd2(X, Y, kernel="gaussian", num_features=8)
        with pytest.raises(ValueError, match="must be a sample matrix"):
            losses.mmd2(X[None], Y, kernel="linear")
        with pytest.raises(ValueError, match="at least 2 rows"):
            losses.mmd2(X[:1], Y, kernel="gaussian", estimator="linear", key=KEY)
        with pytest.raises(ValueError, match="explicit gamma"):
            losses.mmd2_pairwise(X, Y, kernel="gaussian")


# ------------------------------------------------------------------------------------------------------------
# Gram, BN, content, TV, shapes


class TestOtherLosses:
    def test_to_samples(self):
        f = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
        assert losses.to_samples(f).shape == (2, 12, 5)
        assert losses.to_samples(f[0]).shape == (12, 5)
        np.testing.assert_array_equal(losses.to_samples(f[0])[4 * 1 + 2], f[0, 1, 2])
        with pytest.raises(ValueError, match=r"\(H, W, C\)"):
            losses.to_samples(f[0, 0])

    def test_gram(self):
        np.testing.assert_allclose(jax.jit(losses.gram)(X), X64.T @ X64 / 13, rtol=RTOL)

    def test_bn(self):
        x = X.copy()
        x[:, 2] = 3.0  # a constant channel: sd 0
        mu, sd = jax.jit(losses.bn_stats)(x)
        np.testing.assert_allclose(mu, x.astype(float).mean(0), rtol=RTOL)
        np.testing.assert_allclose(sd, x.astype(float).std(0), rtol=RTOL, atol=1e-6)
        expected = np.mean((x.mean(0) - Y64.mean(0)) ** 2 + (x.std(0) - Y64.std(0)) ** 2)
        np.testing.assert_allclose(jax.jit(losses.bn_loss)(x, Y), expected, rtol=RTOL)

    def test_content_loss(self):
        f, p = samples(4, 3, 7), samples(5, 3, 7)
        np.testing.assert_allclose(jax.jit(losses.content_loss)(f, p), np.sum((f.astype(float) - p) ** 2),
                                   rtol=RTOL)
        with pytest.raises(ValueError, match="differ in shape"):
            losses.content_loss(f, p[:2])

    def test_total_variation(self):
        img = samples(6, 2 * 5 * 4, 3).reshape(2, 5, 4, 3).astype(np.float64)
        expected = 0.0
        for b, h, w in itertools.product(range(2), range(5), range(4)):
            if h + 1 < 5:
                expected += np.sum((img[b, h + 1, w] - img[b, h, w]) ** 2)
            if w + 1 < 4:
                expected += np.sum((img[b, h, w + 1] - img[b, h, w]) ** 2)
        tv = jax.jit(losses.total_variation)
        np.testing.assert_allclose(tv(img.astype(np.float32)), expected, rtol=RTOL)
        np.testing.assert_allclose(tv(img[0].astype(np.float32)) + tv(img[1].astype(np.float32)), expected,
                                   rtol=RTOL)
        with pytest.raises(ValueError, match="boundary"):
            losses.total_variation(img, boundary="reflect")
        with pytest.raises(ValueError, match=r"\(H, W, C\)"):
            losses.total_variation(img[0, 0])

    def test_total_variation_gradient_is_official_laplacian(self):
        # The official code adds tv_weight * conv(x, [[0,-1,0],[-1,4,-1],[0,-1,0]] / 8), zero padded.
        img = samples(7, 6 * 5, 3).reshape(6, 5, 3).astype(np.float64)
        pad = np.pad(img, ((1, 1), (1, 1), (0, 0)))
        lap = (4 * img - pad[:-2, 1:-1] - pad[2:, 1:-1] - pad[1:-1, :-2] - pad[1:-1, 2:]) / 8
        tv = functools.partial(losses.total_variation, boundary="zero")
        grad = jax.jit(jax.grad(tv))(img.astype(np.float32))
        np.testing.assert_allclose(np.asarray(grad) / 16, lap, rtol=RTOL, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------
# Style targets, gradients, paper scales, fusion

CASES = [
    ("gram", {}),
    ("linear", {}),
    ("poly", {"c": 1.0, "d": 2, "estimator": "full"}),
    ("poly", {"c": 0.5, "d": 2, "estimator": "unbiased"}),
    ("poly", {"c": 0.5, "d": 3, "estimator": "full"}),
    ("poly", {"c": 0.5, "d": 3, "estimator": "unbiased"}),
    ("poly", {"c": 1.0, "d": 2, "estimator": "linear"}),
    ("gaussian", {"estimator": "linear"}),
    ("gaussian", {"gamma": 0.2, "estimator": "linear"}),
    ("gaussian", {"estimator": "full", "block_size": 4}),
    ("gaussian", {"gamma": 0.2, "estimator": "full", "block_size": 4}),
    ("gaussian", {"estimator": "unbiased"}),
    ("gaussian", {"gamma": 0.2, "estimator": "unbiased"}),
    ("gaussian", {"estimator": "rff", "num_features": 64}),
    ("bn", {}),
]


def direct_loss(method, x, y, key, params):
    if method == "gram":
        return losses.gram_loss(x, y)
    if method == "bn":
        return losses.bn_loss(x, y)
    if method == "linear":
        return losses.mmd2(x, y, kernel="linear")
    return losses.mmd2(x, y, kernel=method, key=key, **params)


def case_id(case):
    method, params = case
    return method + "".join(f"-{k}={v}" for k, v in params.items())


@functools.cache
def jit_style_loss(method, params_items):
    params = dict(params_items)
    return jax.jit(lambda x, y, key: losses.style_loss(method, x, losses.style_target(method, y, **params), key=key,
                                                       **params))


@functools.cache
def jit_style_case(method, params_items):
    """One compiled function per case: (style_loss via the target, the direct loss, its gradient in x)."""
    params = dict(params_items)

    def via_target(x, y, key):
        return losses.style_loss(method, x, losses.style_target(method, y, **params), key=key, **params)

    return jax.jit(lambda x, y, key: (via_target(x, y, key), direct_loss(method, x, y, key, params),
                                      jax.grad(via_target)(x, y, key)))


class TestStyle:
    @pytest.mark.parametrize("case", CASES, ids=case_id)
    def test_style_loss_equals_direct(self, case):
        method, params = case
        got, direct, _ = jit_style_case(method, tuple(params.items()))(X, Y, KEY)
        np.testing.assert_allclose(got, direct, rtol=RTOL, atol=ATOL)

    @pytest.mark.parametrize("case", CASES, ids=case_id)
    def test_finite_gradients(self, case):
        method, params = case
        x = X.copy()
        x[:, 1] = 2.0  # a constant channel
        y = Y.copy()
        y[:, 1] = 0.0  # a dead channel on the style side too
        f = jit_style_case(method, tuple(params.items()))  # compiled for (13, 5), (9, 5) once
        for a, b in ((x, y), (X, X[:9]), (x, x[:9])):
            assert np.all(np.isfinite(np.asarray(f(a, b, KEY)[2]))), (method, params)
        # Identical distributions, every distance and deviation 0: each estimator is exactly 0.
        value, _, grad = f(np.full_like(X, 0.5), np.full_like(Y, 0.5), KEY)
        assert np.all(np.isfinite(np.asarray(grad)))
        assert float(value) == pytest.approx(0.0, abs=1e-5)

    def test_target_is_style_side_only(self):
        # A fixed-gamma full Gaussian target keeps k(y, y); the rule's does not (gamma depends on x).
        fixed, rule = jax.jit(lambda y: (losses.style_target("gaussian", y, gamma=0.2, estimator="full"),
                                         losses.style_target("gaussian", y, estimator="full")))(Y)
        kyy = np.mean([[np_kernel("gaussian", a, b, gamma=0.2) for b in Y64] for a in Y64])
        np.testing.assert_allclose(fixed["kyy"], kyy, rtol=RTOL)
        assert "kyy" not in rule and {"samples", "mean", "ss"} <= set(rule)
        assert set(jax.eval_shape(lambda y: losses.style_target("poly", y), Y)) == {"gram", "mean"}
        assert set(jax.eval_shape(lambda y: losses.style_target("bn", y), Y)) == {"mean", "sd"}

    def test_errors(self):
        with pytest.raises(ValueError, match="unknown style method 'mmd'"):
            losses.style_target("mmd", Y)
        with pytest.raises(ValueError, match="unknown parameter.*gamma.*'poly'"):
            losses.style_target("poly", Y, gamma=1.0)
        with pytest.raises(ValueError, match="estimator='fast': expected one of"):
            losses.style_target("gaussian", Y, estimator="fast")
        with pytest.raises(ValueError, match="rff estimator needs the gaussian kernel"):
            losses.style_target("poly", Y, estimator="rff")
        with pytest.raises(ValueError, match="needs a key"):
            losses.style_loss("gaussian", X, losses.style_target("gaussian", Y))
        with pytest.raises(ValueError, match="lacks samples"):
            losses.style_loss("gaussian", X, losses.style_target("linear", Y), key=KEY)
        with pytest.raises(ValueError, match="channel counts differ"):
            losses.style_loss("gaussian", X[:, :3], losses.style_target("gaussian", Y), key=KEY)


class TestPaperScale:
    """paper_scale * style_loss against the official energies (PAPER_SPEC) written out in NumPy, M == M'."""

    x = samples(8, 13, 5, scale=2.0)  # M odd: the official code drops one row of each side
    y = samples(9, 13, 5, shift=0.5)

    def energy(self, method, c=0.0, key=KEY):
        f, s = self.x.astype(np.float64), self.y.astype(np.float64)
        m, n = f.shape
        if method == "linear":
            return 1e3 * (m / n) * np.sum((f.mean(0) - s.mean(0)) ** 2)
        if method in ("poly", "gram"):
            return 0.1 / (n * n * m) / 4 * (np.sum((f.T @ f - s.T @ s) ** 2)
                                            + 2 * c * np.sum((f.sum(0) - s.sum(0)) ** 2))
        if method == "gaussian":
            pairs = [np.asarray(a, np.float64) for a in jit_pairs(self.x, self.y, key)]
            return 3e14 / (n * m) / 2 * np_paired_h(*pairs, "gaussian")
        return 1e3 * m / 2 / n * np.sum((f.mean(0) - s.mean(0)) ** 2 + (f.std(0) - s.std(0)) ** 2)

    @pytest.mark.parametrize("method,params", [("linear", {}), ("gram", {}), ("poly", {"c": 0.0}),
                                               ("poly", {"c": 1.5}), ("gaussian", {}), ("bn", {})])
    def test_matches_official_energy(self, method, params):
        loss = jit_style_loss(method, tuple(params.items()))(self.x, self.y, KEY)
        got = losses.paper_scale(method, 13, 5, **params) * float(loss)
        np.testing.assert_allclose(got, self.energy(method, **params), rtol=5e-4)

    def test_values(self):
        assert losses.paper_scale("linear", 64, 8) == pytest.approx(8e3)
        assert losses.paper_scale("gaussian", 64, 8) == pytest.approx(3e14 / 32)
        assert losses.paper_scale("gaussian", 65, 8) == pytest.approx(3e14 * 32 / (2 * 8 * 65))
        assert losses.paper_scale("bn", 64, 8) == pytest.approx(32e3)
        with pytest.raises(ValueError, match="unknown style method"):
            losses.paper_scale("Gaussian", 64, 8)


class TestFusion:
    layers = {"relu1_1": (samples(10, 12, 4), samples(11, 10, 4)), "relu2_1": (samples(12, 6, 8),
                                                                                samples(13, 8, 8, shift=1.0))}
    terms = [losses.StyleTerm("linear", 0.3), losses.StyleTerm("gaussian", 2.0, {"estimator": "linear"}),
             losses.StyleTerm("gaussian", 0.5, {"gamma": 0.1, "estimator": "full"})]
    layer_weights = {"relu1_1": 1.0, "relu2_1": 0.25}

    @staticmethod
    def np_loss(term, x, y, key):
        if term.name == "linear":
            return np.sum((x.mean(0) - y.mean(0)) ** 2)
        if term.params["estimator"] == "full":
            return np_mmd2(x, y, "gaussian", gamma=term.params["gamma"])
        pairs = [np.asarray(a, np.float64) for a in jit_pairs(x, y, key)]
        return np_paired_h(*pairs, "gaussian") / len(pairs[0])

    def test_weights_multiply_own_term_only(self):
        feats = {k: v[0] for k, v in self.layers.items()}
        styles = {k: v[1] for k, v in self.layers.items()}
        scales = {(1, "relu2_1"): 7.0}
        total, per_term = jax.jit(lambda f, s, key: losses.fused_style_loss(
            f, losses.fused_style_targets(s, self.terms), self.terms, self.layer_weights, key=key,
            scales=scales))(feats, styles, KEY)
        assert set(per_term) == {"linear", "gaussian_1", "gaussian_2"}
        expected = {}
        for li, (layer, (x, y)) in enumerate(self.layers.items()):
            for ti, term in enumerate(self.terms):
                key = jax.random.fold_in(jax.random.fold_in(KEY, li), ti)
                value = self.np_loss(term, x.astype(float), y.astype(float), key)
                name = ["linear", "gaussian_1", "gaussian_2"][ti]
                expected[name] = expected.get(name, 0.0) + (
                    self.layer_weights[layer] * term.weight * scales.get((ti, layer), 1.0) * value)
        for name, value in expected.items():
            np.testing.assert_allclose(per_term[name], value, rtol=RTOL, atol=1e-7)
        np.testing.assert_allclose(total, sum(expected.values()), rtol=RTOL)

    def test_layers_draw_independent_keys(self):
        # Same samples on two layers: a shared key would give equal linear-time estimates.
        x, y = self.layers["relu1_1"]
        terms = [losses.StyleTerm("gaussian", 1.0, {"estimator": "linear"})]
        fused = jax.jit(lambda f, s, w, key: losses.fused_style_loss(
            f, losses.fused_style_targets(s, terms), terms, w, key=key)[0])
        feats, styles = {"a": x, "b": x}, {"a": y, "b": y}
        only_a = fused(feats, styles, {"a": 1.0, "b": 0.0}, KEY)
        only_b = fused(feats, styles, {"a": 0.0, "b": 1.0}, KEY)
        assert float(only_a) != pytest.approx(float(only_b), rel=1e-6)

    def test_errors(self):
        feats = {"relu1_1": self.layers["relu1_1"][0]}
        targets = jax.jit(lambda s: losses.fused_style_targets(s, self.terms))({"relu1_1": self.layers["relu1_1"][1]})
        with pytest.raises(ValueError, match="no layer weight for layer 'relu1_1'"):
            losses.fused_style_loss(feats, targets, self.terms, {}, key=KEY)
        with pytest.raises(ValueError, match="no style target for layer 'relu1_1'"):
            losses.fused_style_loss(feats, {}, self.terms, self.layer_weights, key=KEY)
        with pytest.raises(ValueError, match="needs a key"):
            losses.fused_style_loss(feats, targets, self.terms, self.layer_weights)
        with pytest.raises(ValueError, match="no style term"):
            losses.fused_style_targets({}, [])
