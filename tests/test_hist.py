"""The ``hist`` method (per-channel histogram matching, Risser et al. 2017), added as one module of the methods
package: its loss against NumPy, its gradient, weights (regions), blends, a fusion and a run, and that the
registry alone makes it a ``--kernel`` name everywhere (help, compare's defaults, the benchmarks)."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT
from PIL import Image

from configs import test as test_config
from nst_jax import config as config_lib
from nst_jax import losses, runner, weights
from nst_jax.errors import ConfigError
from nst_jax.losses.methods.hist import Hist

RNG = np.random.default_rng(7)
X = RNG.normal(size=(30, 4)).astype(np.float32)
Y = (RNG.gamma(2.0, size=(22, 4)) - 1.0).astype(np.float32)  # skewed: more than mean and deviation to match
WX = RNG.uniform(0.0, 1.0, 30).astype(np.float32)
WY = RNG.uniform(0.0, 1.0, 22).astype(np.float32)


def np_hist(x, y):
    """Mean over channels of mean_i (sort(x_c)_i - q_c,i)^2; q_c: the style's sorted values, sample j at level
    (j + 0.5) / M', read at x's levels (i + 0.5) / M by linear interpolation, clamped at the ends."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, mp = len(x), len(y)
    out = []
    for c in range(x.shape[1]):
        xs, ys = np.sort(x[:, c]), np.sort(y[:, c])
        q = ys if m == mp else np.interp((np.arange(m) + 0.5) / m, (np.arange(mp) + 0.5) / mp, ys)
        out.append(np.mean((xs - q) ** 2))
    return float(np.mean(out))


def np_weighted_hist(x, wx, y, wy):
    """Per channel sum_i p_i (xs_i - q(t_i))^2: p the normalised weights in sorted order, t_i the midpoint of the
    cumulative share, q(t) the first sorted style value whose cumulative share reaches t; mean over channels."""
    x, y, wx, wy = (np.asarray(a, np.float64) for a in (x, y, wx, wy))
    out = []
    for c in range(x.shape[1]):
        ox, oy = np.argsort(x[:, c], kind="stable"), np.argsort(y[:, c], kind="stable")
        p, cum_y = wx[ox] / wx.sum(), np.cumsum(wy[oy] / wy.sum())
        t = np.cumsum(p) - p / 2
        q = np.array([y[oy, c][min(np.searchsorted(cum_y, ti, side="left"), len(y) - 1)] for ti in t])
        out.append(np.sum(p * (x[ox, c] - q) ** 2))
    return float(np.mean(out))


@jax.jit
def hist_loss(x, y):
    return Hist().loss(x, Hist().target(y))


class TestHist:
    @pytest.mark.parametrize("y", [np.concatenate([Y, Y[:8] + 0.3]), Y, Y[:7]], ids=["M'=M", "M'<M", "M'<<M"])
    def test_loss_against_numpy(self, y):
        np.testing.assert_allclose(hist_loss(X, y), np_hist(X, y), rtol=1e-5)

    def test_is_sliced_wasserstein_along_the_channel_axes(self):
        swd = losses.sliced_wasserstein(jnp.asarray(X), jnp.asarray(Y), projections=jnp.eye(4))
        np.testing.assert_allclose(hist_loss(X, Y), swd, rtol=1e-6)

    def test_zero_for_the_same_values_in_any_order(self):
        assert float(hist_loss(X, X[::-1])) == 0.0
        assert float(hist_loss(X, X[RNG.permutation(30)])) == 0.0

    def test_gradient_is_finite_and_moves_toward_the_style(self):
        x = X.copy()
        x[:10, 1] = 0.5  # ties within a channel
        x[:, 3] = 0.0  # a constant (dead) channel
        g = jax.jit(jax.grad(lambda v: hist_loss(v, Y)))(x)
        assert np.all(np.isfinite(g)) and np.any(g != 0)
        assert float(hist_loss(x - 0.1 * np.asarray(g), Y)) < float(hist_loss(x, Y))

    def test_weighted_samples_against_numpy(self):
        target = Hist().target(jnp.asarray(Y), weights=jnp.asarray(WY))
        got = jax.jit(lambda x, t, w: Hist().loss(x, t, weights=w))(jnp.asarray(X), target, jnp.asarray(WX))
        np.testing.assert_allclose(got, np_weighted_hist(X, WX, Y, WY), rtol=1e-5)

    def test_a_region_of_equal_size_is_the_loss_of_its_rows(self):
        sx, sy = np.arange(30) < 20, np.arange(22) >= 2
        target = Hist().target(jnp.asarray(Y), weights=jnp.asarray(sy, jnp.float32))
        got = Hist().loss(jnp.asarray(X), target, weights=jnp.asarray(sx, jnp.float32))
        np.testing.assert_allclose(got, np_hist(X[sx], Y[sy]), rtol=1e-5)
        assert Hist().takes_weights

    def test_blend_is_the_pooled_mixture(self):
        y2 = Y * 2.0 + 1.0
        mixed = losses.mixture_style_target(Hist(), [jnp.asarray(Y), jnp.asarray(y2)], [0.5, 0.5])
        pooled = losses.mixture_samples([jnp.asarray(Y), jnp.asarray(y2)], [0.5, 0.5])
        np.testing.assert_allclose(mixed["sorted"], np.sort(np.asarray(pooled), axis=0))
        np.testing.assert_allclose(Hist().loss(jnp.asarray(X), mixed), np_hist(X, pooled), rtol=1e-5)
        alone = losses.mixture_style_target(Hist(), [jnp.asarray(Y), jnp.asarray(y2)], [1.0, 0.0])
        np.testing.assert_array_equal(alone["sorted"], Hist().target(jnp.asarray(Y))["sorted"])

    def test_errors(self):
        with pytest.raises(ValueError, match="lacks sorted"):
            Hist().loss(jnp.asarray(X), losses.style_target("linear", jnp.asarray(Y)))
        with pytest.raises(ValueError, match="channel counts differ"):
            Hist().loss(jnp.asarray(X[:, :3]), Hist().target(jnp.asarray(Y)))
        with pytest.raises(ValueError, match="it takes: none"):
            losses.get_method("hist", bins=10)


class TestThroughTheRegistry:
    def test_registered_deterministic_and_not_streamable(self):
        assert "hist" in losses.METHODS and losses.REGISTRY["hist"] is Hist
        method = losses.get_method("hist")
        assert not method.needs_key and not method.streamable and not method.unbiased_estimate
        assert method.paper_scale(100, 64) == 1.0 and method.evaluation(jnp.asarray(X), jnp.asarray(Y)) is method

    def test_fusion_with_gram_from_the_config(self):
        c = test_config.get_config()
        c.kernel, c.kernel_weights = "gram+hist", "1,2"
        config_lib.check(c)
        terms = config_lib.parse_terms(c)
        assert terms == (losses.StyleTerm("gram", 1.0), losses.StyleTerm(Hist(), 2.0))
        targets = losses.fused_style_targets({"relu1_1": jnp.asarray(Y)}, terms)
        total, per_term = losses.fused_style_loss({"relu1_1": jnp.asarray(X)}, targets, terms, {"relu1_1": 0.5})
        np.testing.assert_allclose(per_term["hist"], 0.5 * 2.0 * np_hist(X, Y), rtol=1e-5)
        np.testing.assert_allclose(per_term["gram"], 0.5 * losses.gram_loss(jnp.asarray(X), jnp.asarray(Y)),
                                   rtol=1e-5)
        np.testing.assert_allclose(total, per_term["gram"] + per_term["hist"], rtol=1e-6)

    def test_strips_refuse_it_at_block_1(self):
        c = test_config.get_config()
        c.kernel, c.strips = "hist", 2
        with pytest.raises(ConfigError, match="the hist method"):
            config_lib.check(c)

    def test_listed_by_help_compare_and_the_benchmarks(self):
        sys.path.insert(0, REPO_ROOT)  # benchmarks/ is not installed
        from benchmarks import end_to_end, run

        assert "hist" in run.METHODS and "hist" in end_to_end.METHODS
        code = "from nst_jax import compare; print(compare.DEFAULT_METHODS)"
        defaults = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                                  timeout=300).stdout
        assert "hist" in defaults.strip().split(",")
        helped = subprocess.run([sys.executable, "-m", "nst_jax.main", "--help"], capture_output=True, text=True,
                                cwd=REPO_ROOT, timeout=300).stdout
        kernel_help = " ".join(helped.split("--kernel:")[1].split("--kernel_weights")[0].split())
        assert "|hist" in kernel_help


@pytest.fixture(scope="module")
def loaded(random_weights):
    return weights.load(random_weights)


def test_a_short_run_lowers_the_energy(loaded):
    c = test_config.get_config()
    c.kernel, c.size, c.steps = "hist", 32, 4
    result, record = runner.stylize(None, None, c, weights=loaded)
    assert result.shape[2] == 3 and np.all(np.isfinite(result))
    total = record["losses"]["total"]
    assert [t["method"] for t in record["terms"]] == ["hist"] and not record["notes"]
    assert record["final_losses"]["total"] < total[0]


def test_a_run_with_regions(loaded, tmp_path):
    size = 32
    rng = np.random.default_rng(0)
    content, style = rng.uniform(0.3, 0.7, (size, size, 3)), rng.uniform(0.0, 1.0, (size, size, 3))
    mask = np.zeros((size, size, 3), np.uint8)
    mask[:, : size // 2], mask[:, size // 2:] = (255, 0, 0), (0, 0, 255)
    for name, rgb in (("content", content), ("style", style), ("mask", mask)):
        Image.fromarray(rgb if rgb.dtype == np.uint8 else np.uint8(rgb * 255)).save(tmp_path / f"{name}.png")
    c = test_config.get_config()
    c.kernel, c.size, c.steps = "hist", size, 3
    c.content, c.style = str(tmp_path / "content.png"), str(tmp_path / "style.png")
    result, record = runner.stylize(c.content, c.style, c, weights=loaded, content_mask=str(tmp_path / "mask.png"),
                                    style_mask=str(tmp_path / "mask.png"))
    assert np.all(np.isfinite(result)) and record["masks"]["regions_used"] is True
    regions = {r["colour"]: r for r in record["regions"]}
    assert set(regions) == {"#ff0000", "#0000ff"} and all(r["style_loss"] > 0 for r in regions.values())
    assert sum(r["style_loss"] for r in regions.values()) == pytest.approx(record["final_losses"]["style"], rel=1e-4)
