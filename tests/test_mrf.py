"""The ``mrf`` method (patch matching, Li and Wand 2016), the first method that sees its layer's spatial layout:
its loss against a brute-force NumPy patch search, its gradient (the match held fixed), blends, the layers it
runs at, its refusals, and short runs through the real driver with random He-normal VGG-19 weights."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT

from configs import test as test_config
from nst_jax import config as config_lib
from nst_jax import losses, runner, weights
from nst_jax.errors import ConfigError
from nst_jax.losses.methods.base import ParamError
from nst_jax.losses.methods.mrf import MRF

RNG = np.random.default_rng(11)
X = RNG.uniform(0.0, 1.0, (7, 6, 4)).astype(np.float32)  # ReLU-like: non-negative activations
Y = RNG.uniform(0.0, 1.0, (6, 8, 4)).astype(np.float32)


def np_patches(f, k):
    """Every k x k patch of f (h, w, N), flattened, in row-major order of their corners: (P, k*k*N)."""
    f = np.asarray(f, np.float64)
    return np.array([f[i: i + k, j: j + k].ravel() for i in range(f.shape[0] - k + 1)
                     for j in range(f.shape[1] - k + 1)])


def np_match(x, py, k):
    """x's patches and, by brute force, the index of each one's style patch (rows of py) of highest normalised
    cross-correlation <p, q> / (|p| |q|)."""
    px = np_patches(x, k)
    ncc = np.array([[p @ q / (np.linalg.norm(p) * np.linalg.norm(q)) for q in py] for p in px])
    return px, ncc.argmax(axis=1)


def np_mrf(x, y, k=3, stride=1, py=None):
    """Mean over x's patches and their k*k*N entries of the squared distance to the matched style patch."""
    if py is None:
        h, w = y.shape[0] - k + 1, y.shape[1] - k + 1
        py = np_patches(y, k).reshape(h, w, -1)[::stride, ::stride].reshape(-1, k * k * y.shape[2])
    px, nn = np_match(x, py, k)
    return float(np.mean((px - py[nn]) ** 2))


@pytest.fixture(scope="module")
def mrf_loss():
    return jax.jit(lambda method, x, y: method.loss(x, method.target(y)), static_argnums=0)


class TestMRF:
    @pytest.mark.parametrize("method", [MRF(), MRF(block_size=5), MRF(block_size=7), MRF(stride=2),
                                        MRF(patch_size=2), MRF(patch_size=1, block_size=9)],
                             ids=["all-at-once", "blocks", "padded-blocks", "stride2", "k2", "k1"])
    def test_loss_against_a_brute_force_search(self, mrf_loss, method):
        got = mrf_loss(method, jnp.asarray(X), jnp.asarray(Y))
        np.testing.assert_allclose(got, np_mrf(X, Y, method.patch_size, method.stride), rtol=1e-5)

    def test_zero_when_every_patch_is_a_style_patch(self, mrf_loss):
        assert float(mrf_loss(MRF(), jnp.asarray(Y), jnp.asarray(Y))) == 0.0
        assert float(mrf_loss(MRF(), jnp.asarray(Y[1:5, 2:7]), jnp.asarray(Y))) == 0.0  # a crop of the style
        assert float(mrf_loss(MRF(), jnp.asarray(X), jnp.asarray(Y))) > 0.0

    def test_match_is_by_correlation_not_distance(self, mrf_loss):
        # The style holds q and 3q: a patch 2.9q is nearer 3q and correlates equally (1) with both, so the
        # first (q) is taken; a patch 1.01q + noise is a touch nearer q in angle.
        q = RNG.uniform(0.5, 1.0, (3, 3, 2)).astype(np.float32)
        style = np.concatenate([q, 3 * q], axis=1)  # (3, 6, 2): patches at columns 0..3, q at 0, 3q at 3
        got = float(mrf_loss(MRF(), jnp.asarray(2.9 * q), jnp.asarray(style)))
        np.testing.assert_allclose(got, np_mrf(2.9 * q, style), rtol=1e-5)
        np.testing.assert_allclose(got, np.mean((1.9 * q) ** 2), rtol=1e-5)

    def test_gradient_holds_the_match_fixed_and_descends(self):
        method = MRF()
        target = method.target(jnp.asarray(Y))
        g = np.asarray(jax.jit(jax.grad(lambda v: method.loss(v, target)))(jnp.asarray(X)))
        # NumPy: d/dx of mean (px - py[nn])^2 with nn a constant, scattered back to the map.
        py = np_patches(Y, 3)
        px, nn = np_match(X, py, 3)
        d = 2.0 * (px - py[nn]) / px.size
        want = np.zeros(X.shape)
        for idx, (i, j) in enumerate((i, j) for i in range(X.shape[0] - 2) for j in range(X.shape[1] - 2)):
            want[i: i + 3, j: j + 3] += d[idx].reshape(3, 3, -1)
        np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-7)
        assert np.all(np.isfinite(g)) and np.any(g != 0)
        assert float(method.loss(jnp.asarray(X - 0.5 * g), target)) < float(method.loss(jnp.asarray(X), target))

    def test_zero_patches_are_finite(self, mrf_loss):
        x, y = X.copy(), Y.copy()
        x[:4, :4], y[:3, :3] = 0.0, 0.0  # dead ReLUs: an all-zero patch on each side
        got = mrf_loss(MRF(), jnp.asarray(x), jnp.asarray(y))
        assert np.isfinite(float(got))
        g = jax.grad(lambda v: MRF().loss(v, MRF().target(jnp.asarray(y))))(jnp.asarray(x))
        assert np.all(np.isfinite(g))

    def test_blend_is_the_union_of_the_styles_patches(self):
        y2 = RNG.uniform(0.0, 2.0, (6, 8, 4)).astype(np.float32)
        mixed = losses.mixture_style_target(MRF(), [jnp.asarray(Y), jnp.asarray(y2)], [0.5, 0.5])
        union = np.concatenate([np_patches(Y, 3), np_patches(y2, 3)])
        np.testing.assert_allclose(np.asarray(mixed["patches"]).reshape(len(union), -1), union, rtol=1e-6)
        np.testing.assert_allclose(MRF().loss(jnp.asarray(X), mixed), np_mrf(X, None, py=union), rtol=1e-5)
        # Weights 1:3: a third of the first style's 24 patches (evenly spaced), all of the second's.
        mixed = losses.mixture_style_target(MRF(), [jnp.asarray(Y), jnp.asarray(y2)], [0.25, 0.75])
        pool = np.concatenate([np_patches(Y, 3)[(np.arange(8) * 24) // 8], np_patches(y2, 3)])
        np.testing.assert_allclose(np.asarray(mixed["patches"]).reshape(len(pool), -1), pool, rtol=1e-6)
        alone = losses.mixture_style_target(MRF(), [jnp.asarray(Y), jnp.asarray(y2)], [1.0, 0.0])
        np.testing.assert_array_equal(alone["patches"], MRF().target(jnp.asarray(Y))["patches"])

    def test_runs_at_its_layers_only_in_a_fusion(self):
        terms = (losses.StyleTerm("gram", 1.0), losses.StyleTerm(MRF(), 2.0))
        style = {"relu1_1": jnp.asarray(Y), "relu3_1": jnp.asarray(Y)}
        targets = losses.fused_style_targets(style, terms)
        assert targets["relu1_1"][1] == {} and set(targets["relu3_1"][1]) == {"patches", "inv_norm"}
        total, per_term = losses.fused_style_loss({"relu1_1": jnp.asarray(X), "relu3_1": jnp.asarray(X)}, targets,
                                                  terms, {"relu1_1": 0.5, "relu3_1": 0.25})
        np.testing.assert_allclose(per_term["mrf"], 0.25 * 2.0 * np_mrf(X, Y), rtol=1e-5)
        gram = losses.gram_loss(losses.to_samples(jnp.asarray(X)), losses.to_samples(jnp.asarray(Y)))
        np.testing.assert_allclose(per_term["gram"], 0.75 * gram, rtol=1e-5)
        np.testing.assert_allclose(total, per_term["gram"] + per_term["mrf"], rtol=1e-6)


class TestRefusals:
    @pytest.mark.parametrize("params, message", [
        ({"patch_size": 0}, "style method 'mrf': patch_size=0: must be an integer >= 1"),
        ({"stride": True}, "style method 'mrf': stride=True: must be an integer >= 1"),
        ({"block_size": 2.5}, "style method 'mrf': block_size=2.5: must be an integer >= 1"),
        ({"layers": ()}, "style method 'mrf': layers=(): must be a non-empty tuple of VGG-19 layer names"),
        ({"layers": ("relu9_1",)}, "layers=('relu9_1',): must be a non-empty tuple of VGG-19 layer names"),
        ({"layers": "relu3_1"}, "must be a non-empty tuple"),
        ({"radius": 1}, "unknown parameter(s) radius for style method 'mrf'"),
    ])
    def test_parameters(self, params, message):
        with pytest.raises(ValueError) as e:
            losses.get_method("mrf", **params)
        assert message in str(e.value) and "\n" not in str(e.value)
        if "radius" not in params:
            assert isinstance(e.value, ParamError)

    @pytest.mark.parametrize("call, message", [
        (lambda: losses.style_target("mrf", losses.to_samples(jnp.asarray(Y))), "needs the layer's spatial layout"),
        (lambda: MRF().target(jnp.asarray(Y), weights=jnp.ones(48)), "not weighted samples: no regions"),
        (lambda: losses.region_targets(MRF(), [jnp.asarray(Y)], jnp.ones((1, 48))), "not weighted samples"),
        (lambda: MRF().target(jnp.asarray(Y[:2])), "3x3 patches do not fit in the style's 2x8 map"),
        (lambda: MRF().loss(jnp.asarray(X[:, :2]), MRF().target(jnp.asarray(Y))), "generated image's 7x2 map"),
        (lambda: MRF().loss(jnp.asarray(X[..., :3]), MRF().target(jnp.asarray(Y))), "holds patches of shape"),
        (lambda: MRF().loss(jnp.asarray(X), losses.style_target("gram", jnp.asarray(Y))), "lacks patches, inv_norm"),
    ])
    def test_in_one_line(self, call, message):
        with pytest.raises(ValueError) as e:
            call()
        assert message in str(e.value) and "\n" not in str(e.value)

    @pytest.mark.parametrize("fields, message", [
        ({"style_layers": "relu1_1,relu2_1", "layer_weights": "1,1"},
         "--style_layers=relu1_1,relu2_1: the mrf method runs at none of them; it runs at relu3_1,relu4_1"),
        ({"strips": 2}, "--strips=2: the mrf method (patch_size=3, stride=1, layers=relu3_1,relu4_1) needs all"),
        ({"content_mask": "c.png", "style_mask": "s.png", "style": "s.png"},
         "--content_mask: the mrf method takes no sample weights"),
    ])
    def test_by_the_config(self, fields, message):
        c = test_config.get_config()
        c.kernel = "mrf"
        for k, v in fields.items():
            c[k] = v
        with pytest.raises(ConfigError) as e:
            config_lib.check(c)
        assert message in str(e.value)

    def test_command_line_exit_status_2(self, tmp_path):
        out = tmp_path / "r.png"
        proc = subprocess.run([sys.executable, "-m", "nst_jax.main", "--config=configs/test.py", "--kernel=gram,mrf",
                               "--config.style_layers=relu1_1", "--config.layer_weights=1", f"--output={out}"],
                              capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and not out.exists()
        assert "the mrf method runs at none of them" in proc.stderr.strip().splitlines()[-1]


class TestThroughTheRegistry:
    def test_registered_spatial_deterministic_not_streamable(self):
        assert "mrf" in losses.METHODS and losses.REGISTRY["mrf"] is MRF
        method = losses.get_method("mrf")
        assert method.spatial and not method.needs_key and not method.streamable and not method.takes_weights
        assert method.runs_at("relu3_1") and method.runs_at("relu4_1") and not method.runs_at("relu1_1")
        assert method.paper_scale(100, 64) == 1.0 and hash(method) == hash(MRF())
        assert "mrf" not in config_lib.streamable_methods()

    def test_listed_by_help_compare_and_the_benchmarks(self):
        sys.path.insert(0, REPO_ROOT)  # benchmarks/ is not installed
        from benchmarks import end_to_end, run

        assert "mrf" in run.METHODS and "mrf" in end_to_end.METHODS
        code = "from nst_jax import compare; print(compare.DEFAULT_METHODS)"
        defaults = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                                  timeout=300).stdout
        assert "mrf" in defaults.strip().split(",")


@pytest.fixture(scope="module")
def loaded(random_weights):
    return weights.load(random_weights)


@pytest.mark.parametrize("kernel", ["mrf", pytest.param("gram,mrf", marks=pytest.mark.slow)])
def test_a_short_run_lowers_the_energy(loaded, kernel):
    # The test config's style layers are relu1_1, relu2_1, relu3_1: mrf runs at relu3_1 (8x8 at 32 px) only.
    c = test_config.get_config()
    c.kernel, c.size, c.steps = kernel, 32, 4
    result, record = runner.stylize(None, None, c, weights=loaded)
    assert result.shape[2] == 3 and np.all(np.isfinite(result))
    assert [t["method"] for t in record["terms"]] == kernel.split(",")
    assert record["final_losses"]["total"] < record["losses"]["total"][0]
    if kernel == "gram,mrf":
        assert record["final_losses"]["style:mrf"] > 0
