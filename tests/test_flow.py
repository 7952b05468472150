"""Optical flow, warping, the consistency check, scene cuts and the temporal term, against known motion and
NumPy (nst_jax.flow, nst_jax.transfer.temporal_loss, nst_jax.clip's temporal weight)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from nst_jax import clip, flow, image

PHOTO = "/work/shared/images/tubingen.jpg"


def texture(hw=(96, 128), seed=0) -> np.ndarray:
    """A smooth random colour texture (blurred noise): structure at every scale, no photograph needed."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.uniform(size=(*hw, 3)).astype(np.float32)
    out = sum(cv2.GaussianBlur(noise, (0, 0), s) * w for s, w in ((1.0, 0.3), (3.0, 0.4), (8.0, 0.3)))
    out = (out - out.min()) / (out.max() - out.min())
    return out.astype(np.float32)


def photo_or_skip() -> np.ndarray:
    if not os.path.exists(PHOTO):
        pytest.skip(f"{PHOTO} not present")
    return image.load_image(PHOTO)


def bilinear_reference(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """out(y, x) = img(y + dy, x + dx) for a constant flow, written out with slices (interior only)."""
    ix, iy = int(np.floor(dx)), int(np.floor(dy))
    fx, fy = dx - ix, dy - iy
    h, w = img.shape[:2]
    ys = slice(max(0, -iy), h - max(0, iy + 1))
    xs = slice(max(0, -ix), w - max(0, ix + 1))

    def at(oy, ox):
        return img[ys.start + iy + oy: ys.stop + iy + oy, xs.start + ix + ox: xs.stop + ix + ox]

    ref = (at(0, 0) * (1 - fx) * (1 - fy) + at(0, 1) * fx * (1 - fy) + at(1, 0) * (1 - fx) * fy
           + at(1, 1) * fx * fy)
    return ref, ys, xs


@pytest.mark.parametrize("dx,dy", [(2.0, -1.0), (0.25, 0.5), (-1.75, 2.4)])
def test_warp_matches_numpy_bilinear(dx, dy):
    img = np.random.default_rng(1).uniform(size=(20, 24, 3)).astype(np.float32)
    flow_ = np.broadcast_to(np.asarray([dx, dy], np.float32), (20, 24, 2))
    out = flow.warp(img, flow_)
    ref, ys, xs = bilinear_reference(img, dx, dy)
    np.testing.assert_allclose(out[ys, xs], ref, atol=1e-5)


def keys_reference(t: float) -> float:
    """Keys' cubic kernel (a = -0.5), written out piecewise."""
    t = abs(t)
    if t <= 1:
        return 1.5 * t**3 - 2.5 * t**2 + 1
    if t < 2:
        return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
    return 0.0


@pytest.mark.parametrize("dx,dy", [(0.5, -1.5), (-2.25, 0.75)])
def test_cubic_warp_matches_a_separable_numpy_filter(dx, dy):
    img = np.random.default_rng(6).uniform(size=(24, 28, 3)).astype(np.float32)
    out = flow.warp(img, np.broadcast_to(np.asarray([dx, dy], np.float32), (24, 28, 2)), order=3)
    ix, iy, fx, fy = int(np.floor(dx)), int(np.floor(dy)), dx - np.floor(dx), dy - np.floor(dy)
    ref = np.zeros_like(img)
    for y in range(4, 20):
        for x in range(4, 24):
            ref[y, x] = sum(keys_reference(fy - j) * keys_reference(fx - i) * img[y + iy + j, x + ix + i]
                            for j in range(-1, 3) for i in range(-1, 3))
    np.testing.assert_allclose(out[4:20, 4:24], ref[4:20, 4:24], atol=1e-5)


def test_cubic_warp_is_exact_on_integer_shifts_and_ramps():
    img = np.random.default_rng(7).uniform(size=(12, 16, 3)).astype(np.float32)
    out = flow.warp(img, np.broadcast_to(np.asarray([2.0, 1.0], np.float32), (12, 16, 2)), order=3)
    np.testing.assert_allclose(out[:11, :14], img[1:, 2:], atol=1e-6)
    ys, xs = np.mgrid[0:12, 0:16].astype(np.float32)
    ramp = 0.03 * xs + 0.02 * ys
    moved = flow.warp(ramp, np.broadcast_to(np.asarray([0.3, 0.6], np.float32), (12, 16, 2)), order=3)
    np.testing.assert_allclose(moved[2:-3, 2:-3], (ramp + 0.03 * 0.3 + 0.02 * 0.6)[2:-3, 2:-3], atol=1e-5)


def test_cubic_warping_blurs_less_than_bilinear_over_a_clip():
    frames, truth = flow.camera_clip(texture((240, 320)), 6, (48, 64))
    linear = cubic = frames[0]
    for f in truth:
        linear, cubic = flow.warp(linear, f), flow.warp_frame(cubic, f)
    inner = (slice(6, -6), slice(6, -10))
    assert np.mean((cubic - frames[-1])[inner] ** 2) < 0.75 * np.mean((linear - frames[-1])[inner] ** 2)


def test_warp_integer_shift_and_border():
    img = np.arange(6 * 8, dtype=np.float32).reshape(6, 8)
    out = flow.warp(img, np.broadcast_to(np.asarray([3.0, 0.0], np.float32), (6, 8, 2)))
    np.testing.assert_array_equal(out[:, :5], img[:, 3:])
    np.testing.assert_array_equal(out[:, 5:], np.repeat(img[:, 7:], 3, axis=1))  # the border repeats


def test_consistency_keeps_a_consistent_translation_and_drops_what_leaves():
    h, w = 16, 20
    forward = np.broadcast_to(np.asarray([2.0, 0.0], np.float32), (h, w, 2)).copy()
    mask = flow.consistency(forward, -forward)
    assert mask[:, 2:].min() == 1.0  # consistent, inside the image
    assert mask[:, :2].max() == 0.0  # their flow points left of the image


def test_consistency_drops_inconsistent_flow_and_motion_boundaries():
    h, w = 16, 20
    zero = np.zeros((h, w, 2), np.float32)
    backward = np.broadcast_to(np.asarray([0.0, 2.0], np.float32), (h, w, 2)).copy()
    # |w~ + w_back|^2 = 4 > 0.01 * 4 + 0.5: every pixel disoccluded
    assert flow.consistency(zero, backward)[: h - 2].max() == 0.0
    # a step in the flow: gradients there exceed 0.01 |w|^2 + 0.002, elsewhere zero
    step = np.zeros((h, w, 2), np.float32)
    step[:, w // 2:, 0] = -1.0
    forward = np.zeros((h, w, 2), np.float32)
    forward[:, w // 2 - 1:, 0] = 1.0
    mask = flow.consistency(forward, step)
    assert mask[:, w // 2 - 1: w // 2 + 1].max() == 0.0  # the boundary (central differences: two columns)
    assert mask[:, 2: w // 2 - 2].min() == 1.0 and mask[:, w // 2 + 2:].min() == 1.0


@pytest.mark.parametrize("source", ["texture", "photo"])
@pytest.mark.parametrize("method", flow.METHODS)
def test_flow_recovers_known_camera_motion(source, method):
    photo = texture((240, 320)) if source == "texture" else photo_or_skip()
    frames, truth = flow.camera_clip(photo, 3, (48, 64), pan=(1.5, -0.5), zoom=1.02)
    for k in (1, 2):
        m = flow.motion(frames[k - 1], frames[k], method)
        epe = flow.end_point_error(m.backward, truth[k - 1], m.mask)
        still = flow.end_point_error(np.zeros_like(truth[k - 1]), truth[k - 1], m.mask)
        assert m.kept_fraction > 0.75 and not m.cut
        assert epe < 0.35 and epe < still / 4, (epe, still)


def test_camera_clip_flow_warps_frames_onto_each_other():
    frames, truth = flow.camera_clip(texture((240, 320)), 2, (48, 64))
    warped = flow.warp(frames[0], truth[0])
    inner = (slice(4, -4), slice(4, -4))
    assert np.mean((warped - frames[1])[inner] ** 2) < np.mean((frames[0] - frames[1])[inner] ** 2) / 10


def test_histogram_distance_and_cuts():
    a = texture(seed=0)
    assert flow.histogram_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert flow.histogram_distance(np.zeros((4, 4, 3)), np.ones((4, 4, 3))) == pytest.approx(1.0)
    other = 1.0 - a[::-1]  # another picture: different structure and colours
    assert flow.motion(a, other).cut
    frames, _ = flow.camera_clip(texture((240, 320)), 2, (48, 64))
    assert not flow.motion(frames[0], frames[1]).cut


def test_warping_error_is_the_masked_mean_square():
    rng = np.random.default_rng(2)
    x, y = rng.uniform(size=(2, 6, 7, 3))
    mask = (rng.uniform(size=(6, 7)) > 0.4).astype(np.float32)
    expected = np.mean(((x - y) ** 2)[mask > 0])
    assert flow.warping_error(x, y, mask) == pytest.approx(expected, rel=1e-9)
    assert np.isnan(flow.warping_error(x, y, np.zeros((6, 7), np.float32)))


def test_temporal_loss_is_ruders_mean():
    import jax.numpy as jnp

    from nst_jax import transfer

    rng = np.random.default_rng(3)
    x, w = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
    c = rng.uniform(size=(5, 6)).astype(np.float32)
    expected = np.sum(c[..., None] * (x - w) ** 2) / x.size
    assert float(transfer.temporal_loss(jnp.asarray(x), jnp.asarray(w), jnp.asarray(c))) == pytest.approx(
        expected, rel=1e-5)


def test_energy_adds_the_temporal_term(random_params):
    import dataclasses

    import jax
    import jax.numpy as jnp

    from configs import default
    from nst_jax import config as cfg_lib
    from nst_jax import transfer

    problem = dataclasses.replace(cfg_lib.problem(default.get_config()), style_layers=("relu1_1",),
                                  layer_weights=(1.0,), content_layers=("relu2_1",))
    rng = np.random.default_rng(4)
    content, style, x, warped = (jnp.asarray(rng.normal(size=(16, 16, 3)), jnp.float32) for _ in range(4))
    mask = jnp.asarray(rng.uniform(size=(16, 16)) > 0.5, jnp.float32)
    tgt = transfer.targets(problem, random_params, content, [style])
    scales = {"content": jnp.float32(1.0), "style": {(0, "relu1_1"): jnp.float32(1.0)}}
    key = jax.random.key(0)
    plain, _ = transfer.energy(problem, random_params, tgt, scales, x, key)
    with_t = dataclasses.replace(problem, temporal_weight=7.0)
    total, terms = transfer.energy(with_t, random_params, {**tgt, "temporal": {"warped": warped, "weight": mask}},
                                   scales, x, key)
    expected = 7.0 * np.sum(np.asarray(mask)[..., None] * np.asarray(x - warped) ** 2) / x.size
    assert float(terms["temporal"]) == pytest.approx(expected, rel=1e-5)
    assert float(total) == pytest.approx(float(plain) + expected, rel=1e-5)
    assert transfer.term_names(with_t)[-1] == "temporal" and "temporal" not in transfer.term_names(problem)


def test_temporal_weight_scales_with_the_content_elements(random_params):
    from configs import default
    from nst_jax import config as cfg_lib

    problem = cfg_lib.problem(default.get_config())  # content at relu4_2: 512 channels, 1/8 of each side
    assert clip.content_elements(problem, random_params, (48, 64)) == 6 * 8 * 512
    assert clip.energy_weight(200.0, 2.0, 6 * 8 * 512) == 200.0 * 2.0 * 6 * 8 * 512


def test_start_image_is_the_warped_frame_where_kept_and_the_frame_elsewhere():
    rng = np.random.default_rng(5)
    rgb, warped = rng.uniform(size=(2, 4, 5, 3)).astype(np.float32)
    mask = (rng.uniform(size=(4, 5)) > 0.5).astype(np.float32)
    start = clip.start_image(rgb, clip.Prior(warped, mask))
    np.testing.assert_array_equal(start, np.where(mask[..., None] > 0, warped, rgb))
