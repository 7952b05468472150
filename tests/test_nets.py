"""The feed-forward networks: instance normalisation and AdaIN against NumPy, the Johnson architecture's layers,
any input size coming back at its size, and the model file's checks (digest, shapes, format)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import he_params

from nst_jax import weights
from nst_jax.errors import ModelError
from nst_jax.nets import adain, johnson, model_file


def test_instance_norm_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (2, 5, 7, 4)).astype(np.float32)
    scale, bias = rng.normal(size=4).astype(np.float32), rng.normal(size=4).astype(np.float32)
    mu = x.mean(axis=(1, 2), keepdims=True)
    var = ((x - mu) ** 2).mean(axis=(1, 2), keepdims=True)
    expected = (x - mu) / np.sqrt(var + 1e-5) * scale + bias
    got = jax.jit(johnson.instance_norm)(x, scale, bias)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_adain_matches_numpy():
    rng = np.random.default_rng(1)
    c = rng.normal(1.0, 2.0, (2, 4, 6, 3)).astype(np.float32)
    s = rng.normal(-3.0, 0.5, (2, 5, 3, 3)).astype(np.float32)

    def stats(a):
        mu = a.mean(axis=(1, 2), keepdims=True)
        return mu, np.sqrt(((a - mu) ** 2).mean(axis=(1, 2), keepdims=True) + 1e-5)

    (mc, sc), (ms, ss) = stats(c), stats(s)
    got = np.asarray(jax.jit(adain.adain)(c, s))
    np.testing.assert_allclose(got, ss * (c - mc) / sc + ms, rtol=1e-4, atol=1e-5)
    # The output carries the style's per-channel mean and deviation.
    mo, so = stats(got)
    np.testing.assert_allclose(mo, ms, atol=1e-4)
    np.testing.assert_allclose(so, ss, rtol=1e-3)


def test_johnson_layers_are_those_of_transformer_net():
    params = jax.eval_shape(johnson.init_params, jax.random.key(0))["params"]

    def kernel(name):
        tree = params[name]["conv"]
        return (tree["conv"] if name.startswith("up") else tree)["kernel"].shape  # up: resize, then a ConvLayer

    assert {n: kernel(n) for n in ("conv1", "conv2", "conv3", "up1", "up2", "conv4")} == {
        "conv1": (9, 9, 3, 32), "conv2": (3, 3, 32, 64), "conv3": (3, 3, 64, 128), "up1": (3, 3, 128, 64),
        "up2": (3, 3, 64, 32), "conv4": (9, 9, 32, 3)}
    assert [k for k in params if k.startswith("res")] == [f"res{i}" for i in range(1, 6)]
    assert params["res3"]["conv1"]["conv"]["kernel"].shape == (3, 3, 128, 128)
    assert "scale" in params["in1"] and "in5" in params and "in6" not in params


def test_upsampling_is_nearest_then_convolution():
    x = jnp.arange(4.0).reshape(1, 2, 2, 1)
    np.testing.assert_array_equal(johnson.upsample_nearest(x)[0, :, :, 0],
                                  [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])


@pytest.fixture(scope="module")
def johnson_params():
    return jax.jit(lambda k: johnson.init_params(k))(jax.random.key(0))


@pytest.mark.parametrize("hw", [(97, 131), (5, 3)])
def test_johnson_keeps_any_size(johnson_params, hw):
    x = np.random.default_rng(0).random((1, *hw, 3), np.float32)
    assert jax.jit(johnson.stylize)(johnson_params, x).shape == (1, *hw, 3)


def test_johnson_crop_is_the_padded_run(johnson_params):
    # An odd image is the top-left of the network's output on its reflection-padded version.
    x = jnp.asarray(np.random.default_rng(2).random((1, 13, 10, 3), np.float32))
    padded = jnp.pad(x, ((0, 0), (0, 3), (0, 2), (0, 0)), mode="reflect")
    np.testing.assert_allclose(jax.jit(johnson.stylize)(johnson_params, x),
                               jax.jit(johnson.TransformerNet().apply)(johnson_params, padded)[:, :13, :10], atol=1e-5)


@pytest.mark.slow
def test_adain_keeps_odd_size_and_interpolates_styles():
    enc = adain.encoder_params(he_params(0))
    dec = adain.init_params(jax.random.key(3))
    rng = np.random.default_rng(4)
    run = jax.jit(adain.stylize)
    c = jnp.asarray(rng.random((1, 97, 131, 3), np.float32))
    s1, s2 = (jnp.asarray(rng.random((1, 16, 24, 3), np.float32)) for _ in range(2))
    assert run(dec, enc, c, [s1]).shape == (1, 97, 131, 3)
    c = c[:, :21, :19]
    # Weights (1, 0) are the first style alone; two halves of one style are that style.
    np.testing.assert_allclose(run(dec, enc, c, [s1, s2], (1.0, 0.0)), run(dec, enc, c, [s1, s1], (0.5, 0.5)),
                               atol=1e-5)
    assert not np.allclose(run(dec, enc, c, [s1, s2], (1.0, 0.0)), run(dec, enc, c, [s1, s2], (0.0, 1.0)), atol=1e-4)
    # alpha = 0 decodes the content's own features, whatever the style.
    np.testing.assert_allclose(run(dec, enc, c, [s1, s2], (1.0, 0.0), 0.0), run(dec, enc, c, [s2, s1], (1.0, 0.0), 0.0),
                               atol=1e-5)


def test_model_file_round_trip_and_damage(tmp_path, johnson_params):
    path = str(tmp_path / "model.msgpack")
    model_file.save(path, "johnson", {"net": johnson_params}, "torchvision", {"kernel": "gram"}, 7)
    m = model_file.load(path)
    assert (m.net, m.step, m.config["kernel"]) == ("johnson", 7, "gram")
    assert m.params_sha256 == weights.params_sha256({"net": johnson_params})
    data = bytearray(open(path, "rb").read())
    kernel = np.asarray(johnson_params["params"]["conv2"]["conv"]["kernel"], "<f4").tobytes()[:64]
    at = bytes(data).index(kernel)
    data[at + 3] ^= 0x40  # one bit of one float
    bad = tmp_path / "damaged.msgpack"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="digest"):
        model_file.load(str(bad))
    (tmp_path / "text.msgpack").write_text("not a model")
    with pytest.raises(ModelError, match="not an nst_jax feed-forward model"):
        model_file.load(str(tmp_path / "text.msgpack"))
    small = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), jax.eval_shape(
        lambda k: johnson.init_params(k, johnson.TransformerNet(residual_blocks=2)), jax.random.key(0)))
    model_file.save(str(tmp_path / "mismatch.msgpack"), "johnson", {"net": small}, "torchvision", {}, 0)
    with pytest.raises(ModelError, match="missing"):
        model_file.load(str(tmp_path / "mismatch.msgpack"))
    with pytest.raises(ModelError, match="no such file"):
        model_file.load(str(tmp_path / "absent.msgpack"))
