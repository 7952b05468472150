"""Tests of nst_jax.color: YIQ, luminance-only transfer and colour histogram matching, checked in NumPy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import color

MODES = ("chol", "sym", "pca")


# ------------------------------------------------------------------------------------------------------------
# NumPy references, written out from the definitions


def np_luma(rgb):
    """Rec. 601 luma, the Y of NTSC YIQ."""
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def np_yiq(rgb):
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.stack(
        [np_luma(rgb), 0.5959 * r - 0.2746 * g - 0.3213 * b, 0.2115 * r - 0.5227 * g + 0.3112 * b], axis=-1
    )


def np_moments(rgb):
    x = np.asarray(rgb, np.float64).reshape(-1, 3)
    return x.mean(0), np.cov(x, rowvar=False, bias=True)


def image(seed, shape, mean, mix, noise=0.0):
    """Correlated colours: mean + mix @ z per pixel (z standard normal), plus white noise, clipped."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((*shape, 3))
    x = np.asarray(mean) + z @ np.asarray(mix).T + noise * rng.standard_normal((*shape, 3))
    return np.clip(x, 0.0, 1.0)


# A warm, low-contrast style and a cool, higher-contrast content of another size; colours well inside the cube
# for most pixels, with a few clipped ones so the clip path is exercised.
STYLE = image(0, (9, 11), [0.6, 0.45, 0.3], [[0.10, 0.02, 0.0], [0.08, 0.05, 0.0], [0.05, 0.03, 0.03]])
CONTENT = image(1, (7, 8), [0.35, 0.45, 0.6], [[0.15, 0.0, 0.03], [0.12, 0.06, 0.0], [0.10, 0.0, 0.10]])


# ------------------------------------------------------------------------------------------------------------
# YIQ


class TestYIQ:
    def test_matches_ntsc_formula(self):
        rng = np.random.default_rng(2)
        rgb = rng.uniform(size=(4, 5, 3))
        np.testing.assert_allclose(color.rgb_to_yiq(rgb), np_yiq(rgb), atol=1e-12)

    @pytest.mark.parametrize("dtype, atol", [(np.float64, 1e-12), (np.float32, 2e-6)])
    def test_round_trip(self, dtype, atol):
        rng = np.random.default_rng(3)
        rgb = rng.uniform(size=(2, 3, 4, 3)).astype(dtype)
        yiq = color.rgb_to_yiq(rgb)
        assert yiq.dtype == dtype and yiq.shape == rgb.shape
        np.testing.assert_allclose(color.yiq_to_rgb(yiq), rgb, atol=atol)
        yiq = np.stack([rng.uniform(size=6), rng.uniform(-0.5, 0.5, 6), rng.uniform(-0.5, 0.5, 6)], -1)
        yiq = yiq.astype(dtype)
        np.testing.assert_allclose(color.rgb_to_yiq(color.yiq_to_rgb(yiq)), yiq, atol=atol)

    @pytest.mark.parametrize("g", [0.0, 0.25, 0.5, 1.0])
    def test_grey_has_y_equal_to_level_and_no_chroma(self, g):
        np.testing.assert_allclose(color.rgb_to_yiq(np.full(3, g)), [g, 0.0, 0.0], atol=1e-12)
        np.testing.assert_allclose(color.yiq_to_rgb(np.array([g, 0.0, 0.0])), [g, g, g], atol=1e-12)

    def test_primaries(self):
        np.testing.assert_allclose(color.rgb_to_yiq(np.eye(3))[:, 0], [0.299, 0.587, 0.114], atol=1e-12)

    def test_jax_in_jax_out_under_jit(self):
        rng = np.random.default_rng(4)
        rgb = rng.uniform(size=(3, 4, 3)).astype(np.float32)
        yiq = jax.jit(color.rgb_to_yiq)(jnp.asarray(rgb))
        assert isinstance(yiq, jax.Array) and yiq.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(yiq), np_yiq(rgb), atol=2e-6)
        back = jax.jit(color.yiq_to_rgb)(yiq)
        np.testing.assert_allclose(np.asarray(back), rgb, atol=2e-6)

    @pytest.mark.parametrize("shape", [(4, 4), (4, 4, 4), (3, 1), (0, 3)])
    @pytest.mark.parametrize("fn", [color.rgb_to_yiq, color.yiq_to_rgb, color.luminance_only])
    def test_bad_shape(self, fn, shape):
        with pytest.raises(ValueError):
            fn(np.zeros(shape))


class TestLuminanceOnly:
    def test_equal_channels_with_luma(self):
        out = color.luminance_only(STYLE)
        assert out.shape == STYLE.shape
        for c in range(3):
            np.testing.assert_allclose(out[..., c], np_luma(STYLE), atol=1e-12)
        assert out.min() >= 0.0 and out.max() <= 1.0

    def test_float32_and_jax(self):
        rgb32 = CONTENT.astype(np.float32)
        out = color.luminance_only(rgb32)
        assert out.dtype == np.float32
        out_jax = jax.jit(color.luminance_only)(jnp.asarray(rgb32))
        assert isinstance(out_jax, jax.Array)
        expected = np.repeat(np_luma(rgb32)[..., None], 3, -1)
        np.testing.assert_allclose(np.asarray(out_jax), expected, atol=2e-6)

    def test_grey_image_unchanged(self):
        grey = np.repeat(np.linspace(0, 1, 12).reshape(3, 4, 1), 3, axis=-1)
        np.testing.assert_allclose(color.luminance_only(grey), grey, atol=1e-12)


# ------------------------------------------------------------------------------------------------------------
# Luminance matching and recombination


class TestMatchLuminance:
    # The style's luminance variance is far above DEFAULT_EPS, so the floor leaves the map exact.
    @pytest.mark.parametrize("eps", [0.0, color.DEFAULT_EPS])
    def test_y_has_content_mean_and_sd(self, eps):
        atol = 1e-10
        assert np_luma(STYLE).var() > 10 * color.DEFAULT_EPS
        out = color.match_luminance(STYLE, CONTENT, eps=eps, clip=False)
        assert out.shape == STYLE.shape
        y, y_c, y_s = np_luma(out), np_luma(CONTENT), np_luma(STYLE)
        np.testing.assert_allclose([y.mean(), y.std()], [y_c.mean(), y_c.std()], atol=atol)
        # An affine increasing map of the style's luminance: same order, same correlation.
        assert np.corrcoef(y.ravel(), y_s.ravel())[0, 1] > 1 - 1e-9
        np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-12)
        np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-12)

    def test_clip(self):
        # A bright content with high contrast pushes part of the mapped style out of [0, 1].
        bright = image(5, (6, 6), [0.9, 0.9, 0.9], 0.3 * np.eye(3))
        raw = color.match_luminance(STYLE, bright, clip=False)
        out = color.match_luminance(STYLE, bright)
        assert raw.max() > 1.0
        assert out.min() >= 0.0 and out.max() <= 1.0
        np.testing.assert_allclose(out, np.clip(raw, 0.0, 1.0), atol=1e-12)

    @pytest.mark.parametrize("eps", [0.0, color.DEFAULT_EPS])
    def test_constant_style_gives_content_mean(self, eps):
        out = color.match_luminance(np.full((4, 4, 3), 0.3), CONTENT, eps=eps)
        assert np.all(np.isfinite(out))
        np.testing.assert_allclose(out, np_luma(CONTENT).mean(), atol=1e-12)

    def test_errors(self):
        with pytest.raises(ValueError):
            color.match_luminance(STYLE[..., :2], CONTENT)
        with pytest.raises(ValueError):
            color.match_luminance(STYLE, CONTENT[..., None])
        with pytest.raises(ValueError):
            color.match_luminance(STYLE, CONTENT, eps=-1.0)
        with pytest.raises(ValueError):
            color.match_luminance(np.full((2, 2, 3), np.nan), CONTENT)


class TestRecombineLuminance:
    def result(self):
        """A grey 'stylised' image of the content's shape."""
        return np.repeat(image(6, CONTENT.shape[:2], [0.5] * 3, 0.15 * np.ones((3, 3)))[..., :1], 3, -1)

    def test_unclipped_is_exact(self):
        result = self.result()
        out = color.recombine_luminance(result, CONTENT, clip=False)
        yiq = np_yiq(out)
        np.testing.assert_allclose(yiq[..., 0], np_luma(result), atol=1e-12)
        np.testing.assert_allclose(yiq[..., 1:], np_yiq(CONTENT)[..., 1:], atol=1e-12)

    def test_clipped_keeps_chroma(self):
        result = self.result()
        raw = color.recombine_luminance(result, CONTENT, clip=False)
        out = color.recombine_luminance(result, CONTENT)
        assert out.min() >= 0.0 and out.max() <= 1.0
        inside = np.all((raw >= 0) & (raw <= 1), axis=-1)
        assert 0 < inside.sum() < inside.size  # both paths occur in this pair
        expected = np.concatenate([np_luma(result)[:, :, None], np_yiq(CONTENT)[..., 1:]], axis=-1)
        np.testing.assert_allclose(np_yiq(out)[inside], expected[inside], atol=1e-12)
        assert np.abs(np_yiq(out)[..., 1:] - np_yiq(CONTENT)[..., 1:]).mean() < 0.02

    def test_content_luminance_gives_content(self):
        out = color.recombine_luminance(color.luminance_only(CONTENT), CONTENT)
        np.testing.assert_allclose(out, CONTENT, atol=1e-12)

    def test_dtype_and_errors(self):
        out = color.recombine_luminance(self.result().astype(np.float32), CONTENT.astype(np.float32))
        assert out.dtype == np.float32
        with pytest.raises(ValueError):
            color.recombine_luminance(STYLE, CONTENT)
        with pytest.raises(ValueError):
            color.recombine_luminance(CONTENT[..., :2], CONTENT[..., :2])


# ------------------------------------------------------------------------------------------------------------
# Colour histogram matching


class TestMatchColorHistogram:
    @pytest.mark.parametrize("mode", MODES)
    # Every colour-covariance eigenvalue of STYLE and CONTENT is above DEFAULT_EPS, so the floor leaves both
    # exact; 1e-10 is float64 rounding.
    @pytest.mark.parametrize("eps", [0.0, color.DEFAULT_EPS])
    def test_unclipped_has_content_moments(self, mode, eps):
        assert min(np.linalg.eigvalsh(np_moments(x)[1]).min() for x in (STYLE, CONTENT)) > 10 * color.DEFAULT_EPS
        out = color.match_color_histogram(STYLE, CONTENT, mode, eps=eps, clip=False)
        assert out.shape == STYLE.shape and out.dtype == np.float64
        mu, cov = np_moments(out)
        mu_c, cov_c = np_moments(CONTENT)
        np.testing.assert_allclose(mu, mu_c, atol=1e-10)
        np.testing.assert_allclose(cov, cov_c, atol=1e-10)

    @pytest.mark.parametrize("mode", MODES)
    def test_near_grey_style_is_floored(self, mode):
        # Chroma variance ~1e-8 < eps: the floor bounds the gain instead of amplifying it ~1000 times.
        grey = np.repeat(np_luma(STYLE)[..., None], 3, -1)
        noisy = grey + 1e-4 * np.random.default_rng(8).standard_normal(grey.shape)
        out = color.match_color_histogram(noisy, CONTENT, mode, clip=False)
        mu, cov = np_moments(out)
        np.testing.assert_allclose(mu, np_moments(CONTENT)[0], atol=1e-10)
        assert np.all(np.isfinite(out)) and np.abs(out).max() < 2.0
        assert np.trace(cov) < np.trace(np_moments(CONTENT)[1])

    @pytest.mark.parametrize("mode", MODES)
    def test_clipped_in_unit_cube(self, mode):
        bright = image(9, (6, 7), [0.8, 0.7, 0.75], [[0.3, 0.0, 0.1], [0.2, 0.1, 0.0], [0.1, 0.1, 0.2]], 0.05)
        raw = color.match_color_histogram(STYLE, bright, mode, clip=False)
        out = color.match_color_histogram(STYLE, bright, mode)
        assert raw.min() < 0.0 or raw.max() > 1.0  # the clip does something here
        assert out.min() >= 0.0 and out.max() <= 1.0
        np.testing.assert_allclose(out, np.clip(raw, 0.0, 1.0), atol=1e-12)

    @pytest.mark.parametrize("mode", MODES)
    def test_matching_to_itself_is_identity(self, mode):
        out = color.match_color_histogram(STYLE, STYLE, mode, eps=0.0, clip=False)
        np.testing.assert_allclose(out, STYLE, atol=1e-10)

    @pytest.mark.parametrize("mode", MODES)
    def test_constant_style_becomes_content_mean(self, mode):
        out = color.match_color_histogram(np.full((5, 5, 3), 0.5), CONTENT, mode)
        assert np.all(np.isfinite(out))
        np.testing.assert_allclose(out, np.broadcast_to(np_moments(CONTENT)[0], out.shape), atol=1e-12)

    @pytest.mark.parametrize("mode", MODES)
    def test_grey_images_are_finite(self, mode):
        grey = np.repeat(image(7, (5, 6), [0.5] * 3, 0.2 * np.eye(3))[..., :1], 3, -1)  # rank-1 covariance
        for style, content in ((grey, CONTENT), (STYLE, grey), (grey, grey)):
            out = color.match_color_histogram(style, content, mode)
            assert np.all(np.isfinite(out)) and out.min() >= 0.0 and out.max() <= 1.0
        # Recolouring a colourful style to a grey content leaves it (nearly) grey.
        out = color.match_color_histogram(STYLE, grey, mode, clip=False)
        assert np.abs(out - out.mean(-1, keepdims=True)).max() < 0.05

    def test_singular_without_eps_raises(self):
        with pytest.raises(ValueError, match="singular"):
            color.match_color_histogram(np.full((3, 3, 3), 0.5), CONTENT, eps=0.0)

    def test_sym_moves_colours_least(self):
        # The symmetric solution is the least-squares (optimal transport) recolouring among maps that match
        # the moments; the others rotate colours more.
        d = {
            m: np.mean(np.sum((color.match_color_histogram(STYLE, CONTENT, m, clip=False) - STYLE) ** 2, -1))
            for m in MODES
        }
        assert d["sym"] <= d["chol"] + 1e-12 and d["sym"] <= d["pca"] + 1e-12

    def test_transform_structure(self):
        _, cov_s = np_moments(STYLE)
        _, cov_c = np_moments(CONTENT)
        a_chol = color.color_transform(cov_s, cov_c, "chol")
        a_sym = color.color_transform(cov_s, cov_c, "sym")
        np.testing.assert_allclose(np.triu(a_chol, 1), 0.0, atol=1e-12)
        np.testing.assert_allclose(a_sym, a_sym.T, atol=1e-10)
        assert np.linalg.eigvalsh(a_sym).min() > 0
        for mode in MODES:
            a = color.color_transform(cov_s, cov_c, mode)
            np.testing.assert_allclose(a @ cov_s @ a.T, cov_c, atol=1e-12)

    def test_batch_and_dtype(self):
        style = np.stack([STYLE, STYLE[::-1]]).astype(np.float32)  # (2, H, W, 3): pixels pooled
        out = color.match_color_histogram(style, CONTENT.astype(np.float32), clip=False)
        assert out.shape == style.shape and out.dtype == np.float32
        mu, cov = np_moments(out)
        mu_c, cov_c = np_moments(CONTENT)
        np.testing.assert_allclose(mu, mu_c, atol=1e-4)
        np.testing.assert_allclose(cov, cov_c, atol=1e-4)

    @pytest.mark.parametrize(
        "style, content, kwargs",
        [
            (STYLE[..., :2], CONTENT, {}),
            (STYLE, np.zeros((4, 4, 4)), {}),
            (np.zeros((0, 3)), CONTENT, {}),
            (STYLE, CONTENT, {"mode": "lab"}),
            (STYLE, CONTENT, {"eps": -1e-3}),
            (np.full((2, 2, 3), np.inf), CONTENT, {}),
        ],
    )
    def test_errors(self, style, content, kwargs):
        with pytest.raises(ValueError):
            color.match_color_histogram(style, content, **kwargs)

    def test_transform_errors(self):
        with pytest.raises(ValueError):
            color.color_transform(np.eye(2), np.eye(3))
        with pytest.raises(ValueError):
            color.color_transform(np.eye(3), np.eye(3), "svd")


def test_preserve_colors_values():
    assert color.PRESERVE_COLORS == ("none", "luminance", "histogram")
    assert set(color.HISTOGRAM_MODES) == set(MODES)
