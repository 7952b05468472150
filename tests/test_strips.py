"""Strip-wise evaluation of VGG blocks 1-2 (nst_jax.strips): the same energy, gradient and image as the
whole-image step, less memory; and the pieces it is built from (second half of VGG, row masks, sums)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import config as config_lib
from nst_jax import losses, runner, strips, transfer, vgg
from nst_jax.errors import ConfigError

STYLE = ("relu1_1", "relu2_1", "relu3_1")


def test_halo_by_hand():
    # Block 1: two convs spoil 2 edge rows, pool1 leaves 1 (= 2 input rows). Block 2: 1 + 2 convs = 3 rows at
    # level 1 (6 input rows), pool2 leaves 2 rows at level 2 = 8 input rows, already a multiple of 4.
    assert strips.halo_rows(1) == 2
    assert strips.halo_rows(2) == 8


@pytest.mark.parametrize("rows, n, strip, count", [(37, 7, 8, 5), (24, 2, 12, 2), (4, 3, 4, 1), (100, 1, 100, 1),
                                                   (1023, 8, 128, 8)])
def test_plan_covers_the_rows_in_aligned_strips(rows, n, strip, count):
    p = strips.plan(rows, n)
    assert (p.strip, p.count, p.halo) == (strip, count, 8)
    assert p.strip % 4 == 0 and p.count <= n and (p.count - 1) * p.strip < rows <= p.count * p.strip


def test_plan_rejects_nonsense():
    with pytest.raises(ValueError, match="strips >= 1"):
        strips.plan(10, 0)


def test_mask_rows_against_numpy():
    x = jnp.ones((1, 6, 2, 3))
    # Slab rows at level 1 start at input row -4 (level-1 row -2); the input has 7 rows, 3 at level 1.
    out = np.asarray(vgg.mask_rows(x, -4, 1, 7))[0, :, 0, 0]
    np.testing.assert_array_equal(out, [0, 0, 1, 1, 1, 0])


def test_second_half_of_the_network_continues_the_first(random_params):
    x = jax.random.normal(jax.random.key(0), (1, 20, 26, 3))
    whole = vgg.extract(random_params, x, ["pool2", "relu3_1", "relu4_2"])
    rest = vgg.extract(random_params, whole["pool2"], ["relu3_1", "relu4_2"], start="conv3_1")
    for name in rest:
        np.testing.assert_array_equal(rest[name], whole[name])
    with pytest.raises(ValueError, match="before the first computed layer"):
        vgg.extract(random_params, whole["pool2"], ["relu2_1"], start="conv3_1")
    with pytest.raises(ValueError, match=r"\(B, H, W, 128\)"):
        vgg.extract(random_params, x, ["relu3_1"], start="conv3_1")


TERMS = [
    losses.StyleTerm("gram"),
    losses.StyleTerm("linear"),
    losses.StyleTerm("bn"),
    losses.StyleTerm("poly", 1.0, {"c": 0.5, "d": 2}),
    losses.StyleTerm("poly", 1.0, {"c": 1.0, "d": 2, "estimator": "unbiased"}),
]


@pytest.mark.parametrize("term", TERMS, ids=lambda t: repr(t.method))
def test_sums_of_parts_give_the_loss_of_the_whole(term):
    rng = np.random.default_rng(0)
    x = np.maximum(rng.normal(0.3, 1.0, (90, 6)), 0).astype(np.float32)
    y = np.maximum(rng.normal(0.0, 1.2, (70, 6)), 0).astype(np.float32)
    target = losses.style_target(term.method, jnp.asarray(y))
    # Three parts, the last padded with zero rows of weight 0 (a strip overhanging the image).
    parts = [x[:30], x[30:75], np.concatenate([x[75:], np.zeros((5, 6), np.float32)])]
    weights = [np.ones(30), np.ones(45), np.r_[np.ones(15), np.zeros(5)]]
    sums = [losses.sample_sums([term], jnp.asarray(p), [target], jnp.asarray(w, jnp.float32))
            for p, w in zip(parts, weights, strict=True)]
    total = jax.tree.map(lambda *a: sum(a), *sums)
    got = losses.style_loss(term.method, losses.SampleSums(total, 90), target)
    want = losses.style_loss(term.method, jnp.asarray(x), target)
    np.testing.assert_allclose(got, want, rtol=2e-5)


def test_pairwise_estimators_need_the_samples():
    assert not losses.streamable("gaussian")
    assert not losses.streamable("poly", d=3)
    assert not losses.streamable("poly", estimator="linear")
    y = jnp.ones((4, 3))
    target = losses.style_target("gaussian", y, estimator="full")
    with pytest.raises(ValueError, match="needs all samples"):
        losses.sample_sums([losses.StyleTerm("gaussian", 1.0, {"estimator": "full"})], y, [target], jnp.ones(4))
    with pytest.raises(ValueError, match="not their sums"):
        losses.style_loss("gaussian", losses.SampleSums({}, 4), target, estimator="full")


def _problem(terms, content, pooling, n):
    return transfer.Problem(content_layers=content, style_layers=STYLE, layer_weights=(1.0, 0.5, 2.0),
                            terms=tuple(terms), pooling=pooling, content_weight=1.0, tv_weight=0.0,
                            optimizer="adam", strips=n)


# Content inside the strip-wise blocks and past them; both poolings; an odd size, a last strip overhanging.
CASES = [
    ([losses.StyleTerm("gram")], ("relu3_2",), "max", 3),
    ([losses.StyleTerm("linear", 0.4), losses.StyleTerm("bn", 0.6)], ("relu1_2", "relu3_1"), "avg", 2),
    ([losses.StyleTerm("poly", 1.0, {"estimator": "unbiased"})], ("relu2_2",), "max", 4),
    ([losses.StyleTerm("w2", 0.5), losses.StyleTerm("coral", 2.0)], ("relu2_2",), "max", 3),
]


@pytest.mark.parametrize("terms, content, pooling, n", CASES, ids=["gram", "linear+bn", "poly-unbiased", "w2+coral"])
@pytest.mark.slow
def test_strips_give_the_whole_image_energy_and_gradient(terms, content, pooling, n, random_params):
    keys = jax.random.split(jax.random.key(1), 3)
    x = jax.random.uniform(keys[0], (29, 22, 3), minval=-2.0, maxval=2.0)
    c = jax.random.uniform(keys[1], (29, 22, 3), minval=-2.0, maxval=2.0)
    s = jax.random.uniform(keys[2], (20, 24, 3), minval=-2.0, maxval=2.0)
    whole = _problem(terms, content, pooling, 1)
    tgt = transfer.targets(whole, random_params, c, [s])
    scales = {"content": 1e-3, "style": {(i, name): 10.0 for i in range(len(terms)) for name in STYLE}}

    def run(problem):
        fn = jax.value_and_grad(lambda y: transfer.energy(problem, random_params, tgt, scales, y, keys[0]),
                                has_aux=True)
        # Full float32 convolutions: on a GPU the default (TF32) rounds each evaluation differently, by ~1e-3.
        with jax.default_matmul_precision("highest"):
            return jax.jit(fn)(x)

    (e1, t1), g1 = run(whole)
    (en, tn), gn = run(dataclasses.replace(whole, strips=n))
    np.testing.assert_allclose(en, e1, rtol=2e-5)
    for name in t1:
        np.testing.assert_allclose(tn[name], t1[name], rtol=2e-5, atol=1e-6 * abs(float(e1)))
    np.testing.assert_allclose(gn, g1, atol=2e-5 * float(jnp.abs(g1).max()))


@pytest.mark.slow
def test_a_short_halo_would_be_wrong(random_params):
    # The check above can fail: with half the halo the strips' rows near their edges are not the image's.
    x = jax.random.uniform(jax.random.key(0), (24, 16, 3), minval=-2.0, maxval=2.0)
    extract = functools.partial(vgg.extract, random_params, pooling="max")
    whole = extract(x[None], ("pool2",))["pool2"][0]
    good = strips.forward(extract, x, strips.plan(24, 3), {}, {}, keep_end=True)[0]
    short = strips.forward(extract, x, dataclasses.replace(strips.plan(24, 3), halo=4), {}, {}, keep_end=True)[0]
    np.testing.assert_allclose(good, whole, rtol=1e-5, atol=1e-5 * float(jnp.abs(whole).max()))
    assert float(jnp.abs(short - whole).max()) > 1e-3 * float(jnp.abs(whole).max())


def test_strips_alone_when_no_layer_lies_past_pool2(random_params):
    # Content and style all within blocks 1-2: pool2's output is not needed and not returned.
    keys = jax.random.split(jax.random.key(3), 3)
    x, c, y = (jax.random.uniform(k, (19, 13, 3), minval=-2.0, maxval=2.0) for k in keys)
    extract = functools.partial(vgg.extract, random_params, pooling="max")
    whole = {name: v[0] for name, v in extract(x[None], ("relu1_2", "relu2_1")).items()}
    content = extract(c[None], ("relu1_2",))["relu1_2"][0]
    term = losses.StyleTerm("gram")
    target = losses.style_target("gram", losses.to_samples(extract(y[None], ("relu2_1",))["relu2_1"][0]))
    end, content_sums, sums = strips.forward(extract, x, strips.plan(19, 3), {"relu1_2": content},
                                             {"relu2_1": ([term], [target])}, keep_end=False)
    assert end is None
    np.testing.assert_allclose(content_sums["relu1_2"], losses.content_loss(whole["relu1_2"], content), rtol=1e-5)
    np.testing.assert_allclose(losses.style_loss("gram", sums["relu2_1"], target),
                               losses.style_loss("gram", losses.to_samples(whole["relu2_1"]), target), rtol=1e-5)


@pytest.mark.slow
def test_strips_take_less_memory():
    # The point of strips, as XLA compiles the step (temporaries; a 512 px image, Gram, nothing executed).
    # Measured: 0.3x on XLA:CPU, 0.4x on a GPU at 1024 px (benchmarks/memory.py).
    def temp_bytes(n):
        problem = _problem([losses.StyleTerm("gram")], ("relu2_2",), "max", n)
        params = vgg.param_shapes()
        x = jax.ShapeDtypeStruct((512, 512, 3), jnp.float32)
        tgt = jax.eval_shape(lambda p, c: transfer.targets(problem, p, c, [c]), params, x)
        scales = {"content": 1.0, "style": {(0, name): 1.0 for name in STYLE}}
        step = jax.grad(lambda y, p, t: transfer.energy(problem, p, t, scales, y, jax.random.key(0))[0])
        return jax.jit(step).lower(x, params, tgt).compile().memory_analysis().temp_size_in_bytes

    assert temp_bytes(8) < 0.6 * temp_bytes(1)


def _config(random_weights, tmp_path, **overrides):
    from configs import test as test_config

    c = test_config.get_config()
    c.weights = random_weights
    c.output = str(tmp_path / "out.png")
    c.update(overrides)
    return c


@pytest.mark.slow
def test_a_run_with_strips_gives_the_same_image(random_weights, tmp_path):
    config = _config(random_weights, tmp_path, kernel="linear,bn", kernel_weights="0.3,0.7", steps=4)
    plain, record = runner.stylize(None, None, config, weights=None)
    config.strips = 3
    striped, record3 = runner.stylize(None, None, config, weights=None)
    assert np.abs(striped - plain).max() <= 1 / 255
    assert record3["config"]["strips"] == 3
    # The balance factors come from gradient norms taken through the strips (transfer.gradient_norms).
    for method, factor in record["balance"]["factors"].items():
        assert record3["balance"]["factors"][method] == pytest.approx(factor, rel=1e-4)


@pytest.mark.parametrize("kernel", ["w2", "coral", "w2,coral"])
@pytest.mark.slow
def test_covariance_methods_with_strips_start_at_the_same_energy_and_lower_it(kernel, random_weights, tmp_path):
    # The covariance from strips is a shifted one-pass sum, the whole image's a two-pass one: equal to float
    # rounding at step 0; Adam then amplifies the rounding (a few 8-bit levels after 4 steps, README).
    config = _config(random_weights, tmp_path, kernel=kernel, kernel_weights="0.5,0.5" if "," in kernel else "",
                     steps=4)
    _, plain = runner.stylize(None, None, config, weights=None)
    config.strips = 3
    _, striped = runner.stylize(None, None, config, weights=None)
    assert striped["losses"]["total"][0] == pytest.approx(plain["losses"]["total"][0], rel=1e-4)
    assert striped["final_losses"]["total"] < striped["losses"]["total"][0]


@pytest.mark.parametrize("overrides, message", [
    ({"strips": 0}, "--strips=0"),
    ({"strips": 2, "kernel": "gaussian"}, "needs all of relu1_1's samples"),
    ({"strips": 2, "kernel": "poly", "poly_d": 3},
     r"computed from sums \(gram, linear, poly, bn, w2, coral; poly with d=2"),
])
def test_config_errors(overrides, message, random_weights, tmp_path):
    with pytest.raises(ConfigError, match=message):
        config_lib.check(_config(random_weights, tmp_path, **overrides))


def test_gaussian_at_deeper_layers_may_use_strips(random_weights, tmp_path):
    config_lib.check(_config(random_weights, tmp_path, strips=2, kernel="gaussian",
                                  style_layers="relu3_1,relu4_1", layer_weights="1,1"))
