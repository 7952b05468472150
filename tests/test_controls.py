"""Control over the result: colour preservation, coarse-to-fine scales, several styles, style scale."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from configs import test as test_config
from nst_jax import demo, losses, runner, weights

RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


@pytest.fixture(scope="module")
def loaded(random_weights):
    return weights.load(random_weights)


def config(**overrides):
    c = test_config.get_config()
    c.steps = 3
    for k, v in overrides.items():
        c[k] = v
    return c


@pytest.mark.slow
def test_luminance_mode_keeps_the_content_chroma(loaded):
    result, record = runner.stylize(None, None, config(preserve_colors="luminance"), weights=loaded)
    content = demo.content_image(1024)
    content = np.asarray(jax.image.resize(content, result.shape, "linear"))  # independent resize is close enough
    iq_result = (result.reshape(-1, 3) @ RGB_TO_YIQ.T)[:, 1:]
    iq_content = (content.reshape(-1, 3) @ RGB_TO_YIQ.T)[:, 1:]
    assert np.mean(np.abs(iq_result - iq_content)) < 0.02
    assert record["preserve_colors"] == "luminance"
    # Without it the run changes the colours far more (the style is blue and yellow).
    plain, _ = runner.stylize(None, None, config(preserve_colors="none", lr=0.5), weights=loaded)
    iq_plain = (plain.reshape(-1, 3) @ RGB_TO_YIQ.T)[:, 1:]
    assert np.mean(np.abs(iq_plain - iq_content)) > np.mean(np.abs(iq_result - iq_content))


def test_histogram_mode_gives_the_style_the_content_colour_statistics():
    content = demo.content_image(64)
    style = demo.style_image(64) * 0.8 + 0.1  # inside [0, 1] after matching: no clipping to blur the check
    _, (recoloured,) = runner.colour_inputs("histogram", content, [style])
    pixels_c, pixels_s = content.reshape(-1, 3).astype(np.float64), recoloured.reshape(-1, 3).astype(np.float64)
    clipped = np.mean((recoloured <= 0) | (recoloured >= 1))
    tol = 1e-3 if clipped == 0 else 0.02
    np.testing.assert_allclose(pixels_s.mean(0), pixels_c.mean(0), atol=tol)
    np.testing.assert_allclose(np.cov(pixels_s.T, bias=True), np.cov(pixels_c.T, bias=True), atol=tol)


@pytest.mark.slow
def test_three_scales_end_at_the_requested_size(loaded):
    result, record = runner.stylize(None, None, config(scales=3, size=64), weights=loaded)
    assert [s["size"] for s in record["scales"]] == [[12, 16], [24, 32], [48, 64]]
    assert result.shape == (48, 64, 3)
    assert all(s["steps_run"] == 3 for s in record["scales"])


@pytest.mark.slow
def test_three_scales_resume_bit_for_bit(loaded, tmp_path):
    c = config(scales=2, size=64, steps=6, checkpoint_every=2)
    full, _ = runner.stylize(None, None, c, weights=loaded)
    polls = []
    ckpt = str(tmp_path / "x.ckpt")
    # Polled after each 2-step chunk: the third poll ends the first scale (not an interruption), the fourth
    # stops the second scale at its step 2.
    with pytest.raises(runner.Interrupted):
        runner.stylize(None, None, c, weights=loaded, checkpoint_path=ckpt,
                       should_stop=lambda: polls.append(1) or len(polls) >= 3)
    c.resume = True
    resumed, record = runner.stylize(None, None, c, weights=loaded, checkpoint_path=ckpt)
    assert record["resumed_from"] == 2
    assert np.array_equal(full, resumed)


@pytest.mark.parametrize("kernel", ["gaussian", "bn"])
@pytest.mark.slow
def test_blend_weights_one_zero_equal_the_single_style(kernel, loaded):
    first, second = demo.style_image(64), demo.content_image(64)
    single, _ = runner.stylize(None, [first], config(kernel=kernel), weights=loaded)
    blended, record = runner.stylize(None, [first, second], config(kernel=kernel, style_blend="1,0"), weights=loaded)
    assert np.array_equal(single, blended)
    assert list(record["style"]["blend"]) == [1.0, 0.0]
    mixed, _ = runner.stylize(None, [first, second], config(kernel=kernel, style_blend="0.5,0.5"), weights=loaded)
    assert not np.array_equal(single, mixed)


@pytest.mark.parametrize("method, params", [("gram", {}), ("linear", {}), ("bn", {}), ("poly", {"c": 1.0}),
                                            ("gaussian", {"gamma": None, "estimator": "full"}), ("w2", {}),
                                            ("coral", {}), ("swd", {}), ("mkmmd", {"estimator": "full"})])
def test_equal_mixture_of_equal_sized_styles_is_their_pooled_sample(method, params):
    rng = np.random.default_rng(0)
    y1, y2 = rng.normal(size=(30, 4)), rng.normal(1.0, 2.0, size=(30, 4))
    mixed = losses.mixture_style_target(method, [y1, y2], [0.5, 0.5], **params)
    pooled = losses.style_target(method, np.concatenate([y1, y2]), **params)
    assert set(mixed) == set(pooled) or method in ("gaussian", "mkmmd")
    for name in set(mixed) & set(pooled):
        if name == "samples":
            continue
        np.testing.assert_allclose(np.asarray(mixed[name]), np.asarray(pooled[name]), rtol=1e-4, atol=1e-5)


def test_mixture_samples_weigh_each_style():
    y1, y2 = np.zeros((40, 2)), np.ones((20, 2))
    pooled = np.asarray(losses.mixture_samples([y1, y2], [0.25, 0.75]))
    # s = min(40 / 0.25, 20 / 0.75) = 26.7: 7 rows of the first, 20 of the second.
    assert pooled.shape == (27, 2) and np.sum(pooled[:, 0] == 0) == 7
    with pytest.raises(ValueError, match="blend weight"):
        losses.mixture_samples([y1, y2], [1.0])
    with pytest.raises(ValueError, match="not all zero"):
        losses.mixture_samples([y1, y2], [0.0, 0.0])


@pytest.mark.slow
def test_style_scale_changes_the_style_size(loaded):
    _, record = runner.stylize(None, None, config(style_scale=0.5), weights=loaded)
    assert record["style"]["size"] == [[16, 16]]


def test_blend_count_must_match_the_styles(loaded):
    with pytest.raises(runner.UserError, match="2 weight"):
        runner.stylize(None, [demo.style_image(32)], config(style_blend="0.5,0.5"), weights=loaded)

