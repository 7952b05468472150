"""Spatial control: weighted statistics against NumPy, masks read and resized, runs with regions, the errors."""

from __future__ import annotations

import dataclasses
import json
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import test as test_config
from nst_jax import cli, image, kernels, losses, masks, runner, transfer, weights
from nst_jax.errors import ConfigError, ImageError, UserError
from nst_jax.losses import mmd, stats

RNG = np.random.default_rng(3)
X = RNG.normal(size=(40, 5)).astype(np.float32)
Y = (RNG.normal(size=(36, 5)) * 1.3 + 0.4).astype(np.float32)
WX = RNG.uniform(0.0, 1.0, 40).astype(np.float32)
WY = RNG.uniform(0.0, 1.0, 36).astype(np.float32)


def np_wmean(x, w):
    return (w[:, None] * x).sum(0) / w.sum()


def np_wgram(x, w):
    return sum(w[i] * np.outer(x[i], x[i]) for i in range(len(w))) / w.sum()


def np_wcov(x, w):
    mu = np_wmean(x.astype(np.float64), w.astype(np.float64))
    return sum(w[i] * np.outer(x[i] - mu, x[i] - mu) for i in range(len(w))) / w.sum()


def np_kernel_mean(k, x, wx, y, wy, exclude=False):
    total, norm = 0.0, 0.0
    for i in range(len(x)):
        for j in range(len(y)):
            if exclude and i == j:
                continue
            total += wx[i] * wy[j] * k(x[i].astype(np.float64), y[j].astype(np.float64))
            norm += wx[i] * wy[j]
    return total / norm


def gauss(gamma):
    return lambda a, b: np.exp(-gamma * np.sum((a - b) ** 2))


# --- weighted statistics ---------------------------------------------------------------------------------


class TestWeightedStatistics:
    def test_gram_mean_std_covariance(self):
        x, w = jnp.asarray(X), jnp.asarray(WX)
        np.testing.assert_allclose(stats.gram(x, w), np_wgram(X, WX), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats.mean(x, w), np_wmean(X, WX), rtol=1e-5, atol=1e-6)
        mu, sd = stats.bn_stats(x, w)
        np.testing.assert_allclose(sd, np.sqrt(np.diag(np_wcov(X, WX))), rtol=1e-5)
        np.testing.assert_allclose(stats.covariance(x, w)[1], np_wcov(X, WX), rtol=1e-4, atol=1e-6)

    def test_all_ones_is_the_unweighted_statistic(self):
        x, ones = jnp.asarray(X), jnp.ones(40)
        np.testing.assert_allclose(stats.gram(x, ones), losses.gram(x), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats.bn_stats(x, ones)[1], losses.bn_stats(x)[1], rtol=1e-5)
        np.testing.assert_allclose(mmd.pooled_gamma(x, jnp.asarray(Y), ones, jnp.ones(36)),
                                   mmd.pooled_gamma(x, jnp.asarray(Y)), rtol=1e-5)

    def test_pooled_bandwidth_counts_each_pair_by_its_weights(self):
        z, wz = np.concatenate([X, Y]).astype(np.float64), np.concatenate([WX, WY]).astype(np.float64)
        d2 = np.sum((z[:, None] - z[None]) ** 2, axis=-1)
        pair = np.outer(wz, wz) * (1 - np.eye(len(z)))
        want = 1.0 / (np.sum(pair * d2) / np.sum(pair))
        got = mmd.pooled_gamma(jnp.asarray(X), jnp.asarray(Y), jnp.asarray(WX), jnp.asarray(WY))
        np.testing.assert_allclose(got, want, rtol=1e-4)

    @pytest.mark.parametrize("exclude", [False, True])
    def test_pairwise_mean(self, exclude):
        got = mmd.pairwise_mean(kernels.gaussian, jnp.asarray(X), jnp.asarray(X), 16, {"gamma": 0.1}, exclude,
                                jnp.asarray(WX), jnp.asarray(WX))
        np.testing.assert_allclose(got, np_kernel_mean(gauss(0.1), X, WX, X, WX, exclude), rtol=1e-5)

    def test_poly_unbiased_correction(self):
        x, w = jnp.asarray(X), jnp.asarray(WX)
        g, mu = stats.gram(x, w), stats.mean(x, w)
        got = mmd.poly2_self(x, g, mu, 1.0, w)

        def k(a, b):
            return (a @ b + 1.0) ** 2
        want = np_kernel_mean(k, X, WX, X, WX, True) - np_kernel_mean(k, X, WX, X, WX, False)
        np.testing.assert_allclose(got, want, rtol=1e-3)

    def test_weighted_rff_mean(self):
        freqs = jax.random.normal(jax.random.key(0), (5, 8))
        got = losses.mmd.rff_mean(jnp.asarray(X), freqs, 16, jnp.asarray(WX))
        proj = X.astype(np.float64) @ np.asarray(freqs, np.float64)
        p = WX / WX.sum()
        want = np.concatenate([p @ np.cos(proj), p @ np.sin(proj)]) / np.sqrt(8)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)

    @pytest.mark.slow
    def test_paired_estimator_converges_to_the_weighted_full_estimator(self):
        # The pairs are drawn in proportion to the weights, so their mean estimates the weighted V-statistic.
        gamma = 0.05
        full = (np_kernel_mean(gauss(gamma), X, WX, X, WX) + np_kernel_mean(gauss(gamma), Y, WY, Y, WY)
                - 2 * np_kernel_mean(gauss(gamma), X, WX, Y, WY))
        draws = jax.jit(jax.vmap(lambda k: losses.mmd.mmd2_linear_time(
            jnp.asarray(X), jnp.asarray(Y), "gaussian", k, {"gamma": gamma}, wx=jnp.asarray(WX), wy=jnp.asarray(WY))))(
            jax.random.split(jax.random.key(1), 2000))
        draws = np.asarray(draws, np.float64)
        stderr = draws.std() / np.sqrt(len(draws))
        assert abs(draws.mean() - full) < 4 * stderr, (draws.mean(), full, stderr)
        # ... and not to the unweighted one, which these weights move by far more than the error.
        plain = float(losses.mmd2(jnp.asarray(X), jnp.asarray(Y), kernel="gaussian", gamma=gamma))
        assert abs(plain - full) > 8 * stderr


SUBSET_X = np.arange(40) % 3 != 0  # 26 rows
SUBSET_Y = np.arange(36) % 4 != 0  # 27 rows
DETERMINISTIC = [losses.Gram(), losses.Linear(), losses.Poly(), losses.Poly(estimator="unbiased"),
                 losses.Poly(d=3, block_size=16), losses.Gaussian(gamma=0.05, estimator="full", block_size=16),
                 losses.Gaussian(gamma=0.05, estimator="unbiased", block_size=16),
                 losses.Gaussian(estimator="full", block_size=16), losses.MKMMD(estimator="full", block_size=16),
                 losses.BN(), losses.W2(), losses.CORAL()]


@pytest.mark.parametrize("method", DETERMINISTIC, ids=repr)
def test_zero_one_weights_are_the_loss_of_the_subset(method):
    """A region of 0/1 weights is the unweighted loss of its rows: an independent check of every weighted path."""
    wx, wy = jnp.asarray(SUBSET_X, jnp.float32), jnp.asarray(SUBSET_Y, jnp.float32)
    got = method.loss(jnp.asarray(X), method.target(jnp.asarray(Y), weights=wy), weights=wx)
    want = method.loss(jnp.asarray(X[SUBSET_X]), method.target(jnp.asarray(Y[SUBSET_Y])))
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-7)


@pytest.mark.slow
def test_sliced_wasserstein_of_a_subset():
    # Equal-size subsets: the weighted quantiles are the subset's sorted values.
    sx, sy = np.arange(40) < 30, np.arange(36) >= 6
    method = losses.SWD(num_projections=7)
    key = jax.random.key(2)
    got = method.loss(jnp.asarray(X), method.target(jnp.asarray(Y), weights=jnp.asarray(sy, jnp.float32)), key=key,
                      weights=jnp.asarray(sx, jnp.float32))
    p = np.asarray(losses.wasserstein.random_directions(key, 5, 7))
    want = np.mean((np.sort(X[sx] @ p, axis=0) - np.sort(Y[sy] @ p, axis=0)) ** 2)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("method", [losses.Gram(), losses.Linear(), losses.Poly(), losses.Poly(estimator="unbiased"),
                                    losses.BN(), losses.W2(), losses.CORAL()], ids=repr)
def test_weighted_sums_add_up_to_the_weighted_loss(method):
    """--strips: a region's weighted sums over two parts of the rows give the region's loss."""
    x, wx = jnp.asarray(X), jnp.asarray(WX)
    target = method.target(jnp.asarray(Y), weights=jnp.asarray(WY))
    parts = [method.sums(x[s], target, wx[s]) for s in (slice(0, 17), slice(17, 40))]
    sums = jax.tree.map(lambda a, b: a + b, *parts)
    got = method.loss_from_sums(losses.SampleSums(sums, jnp.sum(wx)), target)
    np.testing.assert_allclose(got, method.loss(x, target, weights=wx), rtol=2e-4)


# --- masks -----------------------------------------------------------------------------------------------


def test_palette_snaps_near_colours_and_refuses_too_many():
    m = np.zeros((40, 40, 3), np.uint8)
    m[:, :20] = (250, 4, 3)
    m[:, 20:] = (0, 0, 255)
    m[:, 19:21] = (128, 2, 128)  # an antialiased border, 5 % of the pixels but between two listed colours...
    noisy = np.clip(m.astype(int) + RNG.integers(-6, 7, m.shape), 0, 255).astype(np.uint8)  # JPEG-like noise
    colours = masks.palette([noisy, m])
    # ... is listed (it covers over 1 %) only if far from both: it is, so 3 regions; the noise joins them.
    assert len(colours) == 3
    labels = masks.snap(noisy, colours)
    assert len(np.unique(labels[:, :19])) == 1 and len(np.unique(labels[:, 21:])) == 1
    thin = m.copy()
    thin[:, 19:21] = (245, 0, 10)  # a near-colour border joins the red region
    assert len(masks.palette([thin])) == 2
    grid = np.asarray([(r, g, b) for r in (0, 127, 255) for g in (0, 127, 255) for b in (0, 127, 255)], np.uint8)
    many = np.repeat(grid[:17][:, None, :], 17, axis=1)  # 17 colours, each a row, far apart
    with pytest.raises(ImageError, match="more than 16 colours"):
        masks.palette([many], ["--content_mask=x.png"])


def test_soft_masks_and_layer_masks():
    labels = np.zeros((64, 48), np.int32)
    labels[20:, 10:] = 1
    soft = masks.soft_masks(labels, 2, (16, 12))
    np.testing.assert_allclose(soft.sum(axis=0), 1.0, rtol=1e-6)
    # Area averaging: 4x4 blocks; the block rows 20:24 are all inside region 1 from column 12 on.
    np.testing.assert_allclose(soft[1, 5, 3:], 1.0, rtol=1e-6)
    np.testing.assert_allclose(soft[1, 5, 2], 0.5, rtol=1e-6)  # columns 8:12, two of them in region 1
    at = masks.layer_masks(soft, ["relu1_1", "relu2_1", "relu3_1"])
    assert at["relu1_1"].shape == (2, 16, 12) and at["relu3_1"].shape == (2, 4, 3)
    np.testing.assert_allclose(at["relu2_1"][1, 2, 1], soft[1, 4:6, 2:4].mean(), rtol=1e-6)


def test_mask_shapes_are_checked():
    masks.check_shape((100, 200), (50, 100), "m")  # same aspect, other resolution
    with pytest.raises(ImageError, match="aspect ratio"):
        masks.check_shape((100, 100), (50, 100), "m")


def test_region_loss_is_the_share_weighted_sum_of_the_regions_losses():
    """sum_r (W_r / M) L_r at a layer, each region's Gram loss from weighted Gram matrices (NumPy)."""
    w = np.stack([np.asarray(SUBSET_X, np.float32), 1.0 - np.asarray(SUBSET_X, np.float32) * 0.5])
    v = np.stack([np.asarray(SUBSET_Y, np.float32) / SUBSET_Y.sum(), np.full(36, 1 / 36, np.float32)])
    term = losses.StyleTerm("gram")
    targets = {"l": [losses.region_targets(term.method, [jnp.asarray(Y)], jnp.asarray(v))]}
    total, _, per_region = losses.fused_region_loss({"l": jnp.asarray(X)}, targets, [term], {"l": 2.0},
                                                    {"l": jnp.asarray(w.reshape(2, 5, 8))})
    want = [2.0 * w[r].sum() / 40 * np.sum((np_wgram(X, w[r]) - np_wgram(Y, v[r])) ** 2) / (4 * 25) for r in (0, 1)]
    np.testing.assert_allclose(per_region, want, rtol=1e-4)
    np.testing.assert_allclose(total, sum(want), rtol=1e-4)


# --- runs ------------------------------------------------------------------------------------------------

SIZE = 48


@pytest.fixture(scope="module")
def loaded(random_weights):
    return weights.load(random_weights)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Synthetic images: a style whose left half is red texture and right half blue texture, a grey content;
    a style mask splitting the halves, a content mask splitting top and bottom (red top, blue bottom)."""
    d = tmp_path_factory.mktemp("masks")
    rng = np.random.default_rng(0)
    style = np.zeros((SIZE, SIZE, 3), np.float32)
    half = SIZE // 2
    style[:, :half] = np.array([1.0, 0.1, 0.1]) * rng.uniform(0.3, 1.0, (SIZE, half, 1))
    style[:, half:] = np.array([0.1, 0.1, 1.0]) * rng.uniform(0.3, 1.0, (SIZE, half, 1))
    content = 0.5 + rng.uniform(-0.15, 0.15, (SIZE, SIZE, 3))
    image.save_image(str(d / "style.png"), style)
    image.save_image(str(d / "content.png"), content)
    sm = np.zeros((SIZE, SIZE, 3), np.uint8)
    sm[:, :half], sm[:, half:] = (255, 0, 0), (0, 0, 255)
    cm = np.zeros((SIZE, SIZE, 3), np.uint8)
    cm[:half], cm[half:] = (255, 0, 0), (0, 0, 255)
    Image.fromarray(sm).save(d / "style_mask.png")
    Image.fromarray(cm).save(d / "content_mask.png")
    Image.fromarray(np.full((SIZE, SIZE, 3), 200, np.uint8)).save(d / "one.png")
    Image.fromarray(np.full((SIZE // 2, SIZE // 2, 3), 200, np.uint8)).save(d / "one_half.png")
    Image.fromarray(np.zeros((SIZE, SIZE * 2, 3), np.uint8)).save(d / "wide.png")
    tiny = cm.copy()
    tiny[0, 0] = (0, 255, 0)  # one pixel of a colour the style mask lists: under half a pixel at 12 px
    Image.fromarray(tiny).save(d / "tiny.png")
    three = cm.copy()
    three[20:28] = (0, 255, 0)  # a band no style mask has
    Image.fromarray(three).save(d / "three.png")
    green = sm.copy()
    green[3 * SIZE // 4:] = (0, 255, 0)
    Image.fromarray(green).save(d / "green_style_mask.png")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return d


def config(files, **overrides):
    c = test_config.get_config()
    c.size, c.steps, c.lr = SIZE, 6, 0.1
    c.content, c.style = str(files / "content.png"), str(files / "style.png")
    for k, v in overrides.items():
        c[k] = v
    return c


def redness(rgb):
    return float(np.mean(rgb[..., 0] - rgb[..., 2]))


@pytest.fixture(scope="module")
def masked_runs(files, loaded):
    """(config, result without masks, result with masks, its record)."""
    c = config(files)
    plain, _ = runner.stylize(str(files / "content.png"), c.style, c, weights=loaded)
    masked, record = runner.stylize(str(files / "content.png"), c.style, c, weights=loaded,
                                    content_mask=str(files / "content_mask.png"),
                                    style_mask=str(files / "style_mask.png"))
    return c, plain, masked, record


def test_regions_take_the_style_of_their_region(masked_runs):
    """The top takes the red half's texture, the bottom the blue half's: redder and bluer than without masks."""
    _, plain, masked, record = masked_runs
    top, bottom = slice(0, SIZE // 2), slice(SIZE // 2, SIZE)
    assert redness(masked[top]) > redness(plain[top]) + 0.05
    assert redness(masked[bottom]) < redness(plain[bottom]) - 0.01
    regions = {r["colour"]: r for r in record["regions"]}
    assert set(regions) == {"#ff0000", "#0000ff"}
    for r in regions.values():
        assert r["style"] == "region" and r["content_share"] == pytest.approx(0.5)
        assert r["style_share"] == [pytest.approx(0.5)] and r["style_loss"] > 0
    total = record["final_losses"]["style"]
    assert sum(r["style_loss"] for r in regions.values()) == pytest.approx(total, rel=1e-4)
    assert "style@#ff0000" in record["losses"]


def test_resume_with_masks_is_bit_for_bit_and_other_masks_are_refused(masked_runs, files, loaded, tmp_path):
    c, _, masked, _ = masked_runs
    c = c.copy_and_resolve_references()
    c.checkpoint_every = 2
    ckpt = str(tmp_path / "x.ckpt")
    kw = {"weights": loaded, "checkpoint_path": ckpt, "content_mask": str(files / "content_mask.png"),
          "style_mask": str(files / "style_mask.png")}
    with pytest.raises(runner.Interrupted):
        runner.stylize(str(files / "content.png"), c.style, c, should_stop=lambda: True, **kw)
    c.resume = True
    with pytest.raises(UserError, match="other settings, weights or inputs"):
        runner.stylize(str(files / "content.png"), c.style, c, **{**kw, "content_mask": str(files / "tiny.png")})
    resumed, record = runner.stylize(str(files / "content.png"), c.style, c, **kw)
    assert record["resumed_from"] == 2
    assert np.array_equal(masked, resumed)


@pytest.mark.slow
def test_one_colour_everywhere_is_the_unmasked_run_bit_for_bit(files, loaded):
    c = config(files, steps=3)
    plain, _ = runner.stylize(str(files / "content.png"), c.style, c, weights=loaded)
    # One colour over the content and the style (drawn at half resolution: resized with its image).
    one, record = runner.stylize(str(files / "content.png"), c.style, c, weights=loaded,
                                 content_mask=str(files / "one_half.png"), style_mask=str(files / "one.png"))
    assert np.array_equal(plain, one)
    assert record["masks"]["regions_used"] is False


@pytest.mark.slow
def test_strips_add_region_sums_like_unmasked_ones(files, loaded):
    """The energy and its gradient with --strips equal those without, with regions (Gram and BN)."""
    # Blocks 1-2 only (the strip-wise layers) at 48 px: cheap to compile.
    c = config(files, kernel="gram,bn", kernel_weights="1,1", strips=3, style_layers="relu1_1,relu2_1",
               layer_weights="1,1", content_layers="relu2_2")
    problem = runner.cfg_lib.problem(c, (1.0,))
    read = masks.load(str(files / "content_mask.png"), [str(files / "style_mask.png")], (SIZE, SIZE), [(SIZE, SIZE)])
    run_masks = read.at((SIZE, SIZE), [(SIZE, SIZE)], list(problem.style_layers), (1.0,))
    problem = dataclasses.replace(problem, regions=run_masks.names)
    content = image.preprocess(jnp.asarray(image.load_image(str(files / "content.png"))), "torchvision")
    style = image.preprocess(jnp.asarray(image.load_image(str(files / "style.png"))), "torchvision")
    whole = dataclasses.replace(problem, strips=1)
    tgt = transfer.targets(whole, loaded.params, content, [style], run_masks.arrays())
    scales = {"content": jnp.float32(1.0), "style": {}}
    key = jax.random.key(0)
    x = content + 0.1

    def value_and_grad(p):
        return jax.value_and_grad(lambda y: transfer.energy(p, loaded.params, tgt, scales, y, key)[0])(x)

    (e1, g1), (e3, g3) = value_and_grad(whole), value_and_grad(problem)
    np.testing.assert_allclose(e3, e1, rtol=2e-5)
    np.testing.assert_allclose(g3, g1, rtol=1e-3, atol=1e-4 * float(jnp.max(jnp.abs(g1))))


@pytest.mark.slow
def test_paired_sampling_and_covariance_methods_with_blends_fallback_and_scales(files, loaded):
    """The Gaussian's pairs and swd's quantiles in one fusion, two styles blended (the second with a one-colour
    mask: its colour is unused, and the red and blue regions pool only the first style's samples) and the
    fallback for a content colour no style has: finite losses per region."""
    c = config(files, kernel="gaussian,swd", kernel_weights="1,1", steps=2, mask_fallback="whole", size=32)
    styles = f"{files / 'style.png'},{files / 'style.png'}"
    _, record = runner.stylize(str(files / "content.png"), styles, c, weights=loaded,
                               content_mask=str(files / "three.png"),
                               style_mask=f"{files / 'style_mask.png'},{files / 'one.png'}")
    regions = {r["colour"]: r for r in record["regions"]}
    assert regions["#ff0000"]["style"] == "region" and regions["#0000ff"]["style"] == "region"
    assert regions["#c8c8c8"]["style"] == "unused"  # only in the second style's mask
    assert regions["#00ff00"]["style"] == "whole"  # the fallback: both whole styles, blended
    assert all(np.isfinite(regions[k]["style_loss"]) for k in ("#ff0000", "#0000ff", "#00ff00"))
    assert record["status"] == "done" and np.isfinite(record["final_losses"]["total"])


def test_colours_without_a_style_region_get_no_style_loss_or_the_fallback(files):
    read = masks.load(str(files / "three.png"), [str(files / "style_mask.png")], (SIZE, SIZE), [(SIZE, SIZE)])
    none = read.at((SIZE, SIZE), [(SIZE, SIZE)], ["relu1_1"], (1.0,))
    assert set(none.names) == {"#ff0000", "#0000ff"}  # green has no style region: no style loss
    assert {r["colour"]: r["style"] for r in none.info}["#00ff00"] == "none"
    whole = masks.Masks(read.colours, read.content, read.styles, "whole").at((SIZE, SIZE), [(SIZE, SIZE)],
                                                                             ["relu1_1"], (1.0,))
    assert "#00ff00" in whole.names
    # The fallback's style weights are the whole style, uniform.
    np.testing.assert_allclose(whole.style["relu1_1"][whole.names.index("#00ff00")], 1 / SIZE**2, rtol=1e-5)


def test_masks_are_resized_per_scale(files):
    c = config(files, scales=3, content_mask=str(files / "content_mask.png"), style_mask=str(files / "style_mask.png"))
    content, style = image.load_image(str(files / "content.png")), image.load_image(str(files / "style.png"))
    per_scale = runner._masks_per_scale(c, content, [style], runner.scale_sizes(SIZE, 3), SIZE, (1.0,))
    assert [m.content["relu1_1"].shape for m in per_scale] == [(2, 12, 12), (2, 24, 24), (2, 48, 48)]
    assert [m.style["relu2_1"].shape for m in per_scale] == [(2, 36), (2, 144), (2, 576)]
    for m in per_scale:  # each region's style weights: the half of the style of its colour, summing to 1
        np.testing.assert_allclose(m.style["relu1_1"].sum(axis=1), 1.0, rtol=1e-5)


# --- errors ----------------------------------------------------------------------------------------------


ERRORS = {
    "aspect": ({"content_mask": "wide.png"}, ImageError, "aspect ratio"),
    "unreadable": ({"content_mask": "broken.png"}, ImageError, "--content_mask="),
    "missing": ({"content_mask": "nothing.png"}, ImageError, "no such file"),
    "zero pixels": ({"content_mask": "tiny.png", "style_mask": "green_style_mask.png", "size": 12}, ImageError,
                    "region #00ff00 has no pixels at 12x12 px"),
    "style mask count": ({"style_mask": "style_mask.png,style_mask.png"}, ConfigError, "2 mask(s) for 1 style"),
    "no style": ({"style": ""}, ConfigError, "need --style"),
    "style mask alone": ({"content_mask": ""}, ConfigError, "--style_mask needs --content_mask"),
    "bad fallback": ({"mask_fallback": "nearest"}, ConfigError, "--mask_fallback=nearest"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_user_errors_are_one_line_exit_2_and_write_nothing(case, files, loaded, random_weights, tmp_path, capsys):
    overrides, error, needle = ERRORS[case]
    c = config(files, content_mask=str(files / "content_mask.png"), style_mask=str(files / "style_mask.png"),
               output=str(tmp_path / "out" / "o.png"), weights=random_weights)
    for k, v in overrides.items():
        c[k] = str(files / v) if k.endswith("mask") and v else v
    with pytest.raises(error, match=needle.replace("(", r"\(").replace(")", r"\)")):
        runner.stylize(str(files / "content.png"), c.style or None, c, weights=loaded)
    with pytest.raises(SystemExit) as stop:
        cli.run_one(c)
    assert stop.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "no accelerator" not in line]
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_method_without_weights_is_refused_with_masks(files, monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class Plain(losses.StyleMethod):
        name: ClassVar[str] = "plainmean"

        def target(self, y):
            return {"mean": jnp.mean(y, axis=0)}

        def loss(self, x, target, *, key=None):
            return jnp.sum(jnp.square(jnp.mean(x, axis=0) - target["mean"]))

        def paper_scale(self, m, n):
            return 1.0

    monkeypatch.setitem(losses.REGISTRY, Plain.name, Plain)
    assert not Plain().takes_weights and losses.Gram().takes_weights
    c = config(files, kernel="gram,plainmean", content_mask=str(files / "content_mask.png"))
    with pytest.raises(ConfigError, match="the plainmean method takes no sample weights"):
        runner.cfg_lib.check(c)


def test_batch_mode_refuses_masks(files, tmp_path, capsys):
    c = config(files, content_mask=str(files / "content_mask.png"))
    with pytest.raises(SystemExit) as stop:
        cli.run_batch(c, content_dir=str(files), output_dir=str(tmp_path / "out"))
    assert stop.value.code == 2 and "batch mode does not take masks" in capsys.readouterr().err


def test_command_line_run_with_masks_writes_the_regions(masked_runs, files, random_weights, tmp_path):
    assert {"content_mask", "style_mask", "mask_fallback"} <= {f.name for f in cli.RUN_FLAGS}
    from nst_jax import compare  # defines its flags: the mask flags among them

    assert {"content_mask", "style_mask", "mask_fallback"} <= set(compare.COMPARE_RUN_FLAGS)
    c, _, masked, _ = masked_runs
    c = c.copy_and_resolve_references()
    c.content, c.output = str(files / "content.png"), str(tmp_path / "o.png")
    c.content_mask, c.style_mask, c.checkpoint_every = str(files / "content_mask.png"), str(files / "style_mask.png"), 0
    c.weights = random_weights
    assert cli.run_one(c) == 0
    with open(tmp_path / "o.json") as f:
        record = json.load(f)
    assert {r["colour"] for r in record["regions"]} == {"#ff0000", "#0000ff"}
    assert record["masks"] == {"content": c.content_mask, "style": [c.style_mask], "fallback": "none",
                               "regions_used": True}
    assert np.array_equal(image.to_uint8(masked), np.asarray(Image.open(tmp_path / "o.png").convert("RGB")))


# --- the demo images' masks -------------------------------------------------------------------------------


def test_demo_masks_label_the_demo_images():
    from nst_jax import demo

    cm, sm = demo.content_mask(64), demo.style_mask(64)
    assert cm.shape == demo.content_image(64).shape and sm.shape == demo.style_image(64).shape
    assert cm.dtype == sm.dtype == np.uint8
    content_colours = {tuple(c) for c in cm.reshape(-1, 3)}
    assert content_colours == {demo.SKY, demo.HILLS, demo.HOUSE}
    assert {tuple(c) for c in sm.reshape(-1, 3)} == {demo.SKY, demo.HILLS}
    # The sky is at the top, the hills at the bottom, and the painting's yellow strokes are its HILLS.
    assert tuple(cm[0, 32]) == demo.SKY and tuple(cm[-1, 32]) == demo.HILLS
    yellow = np.all(sm == demo.HILLS, axis=-1)
    painting = demo.style_image(64)
    assert painting[yellow][:, 2].mean() < painting[~yellow][:, 2].mean()  # less blue where labelled yellow
    np.testing.assert_array_equal(masks.read("demo", "content_mask", (48, 64)), cm)


@pytest.mark.slow
def test_demo_masks_run_in_one_command(loaded, random_weights, tmp_path):
    c = test_config.get_config()
    c.size, c.steps, c.weights, c.output = 32, 2, random_weights, str(tmp_path / "o.png")
    c.content_mask, c.style_mask, c.checkpoint_every = "demo", "demo", 0
    assert cli.run_one(c) == 0
    record = json.loads((tmp_path / "o.json").read_text())
    roles = {r["colour"]: r["style"] for r in record["regions"]}
    assert roles == {"#286ee6": "region", "#e6b41e": "region", "#c82828": "none"}


@pytest.mark.parametrize("overrides,needle", [
    ({"content": "photo.png", "content_mask": "demo", "style_mask": ""}, "--content_mask=demo is the demo content"),
    ({"style": "painting.png", "content_mask": "demo", "style_mask": "demo"}, "--style_mask=demo is the demo"),
    ({"content_mask": "demo", "style_mask": ""}, "need --style"),
])
def test_demo_masks_only_with_the_demo_images(overrides, needle):
    c = test_config.get_config()
    for k, v in overrides.items():
        c[k] = v
    with pytest.raises(ConfigError, match=needle):
        runner.cfg_lib.check(c)
