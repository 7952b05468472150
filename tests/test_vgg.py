"""Flax VGG-19 against torchvision's own forward pass (parity), and the extractor's contract."""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import vgg

torch = pytest.importorskip("torch")

PARITY_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1") + tuple(
    f"pool{b}" for b in range(1, 6)
)
INPUT_SHAPE = (1, 3, 72, 56)  # NCHW, non-square; pool5 is 2 x 1
TOLERANCE = 1e-4


def torch_activations(features, x_nchw: np.ndarray, layers) -> dict[str, np.ndarray]:
    """Runs torchvision's ``features``, recording the named layers' outputs as NHWC NumPy arrays."""
    out, x = {}, torch.from_numpy(x_nchw)
    deepest = max(vgg.LAYERS.index(name) for name in layers)
    with torch.no_grad():
        for index, name in enumerate(vgg.LAYERS[: deepest + 1]):
            x = features[index](x.clone())  # clone: the ReLUs are in place
            if name in layers:
                out[name] = x.permute(0, 2, 3, 1).numpy().copy()
    return out


def relative_errors(ours: dict, ref: dict) -> dict[str, float]:
    """max |ours - ref| / max |ref| per layer."""
    return {
        name: float(np.max(np.abs(np.asarray(ours[name]) - ref[name])) / np.max(np.abs(ref[name])))
        for name in ref
    }


@pytest.fixture(scope="module")
def parity_input() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(INPUT_SHAPE).astype(np.float32)


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_parity_with_torchvision(torch_vgg, torch_params, parity_input, pooling):
    features = torch_vgg.features
    if pooling == "avg":
        features = copy.deepcopy(features)
        for index, module in enumerate(features):
            if isinstance(module, torch.nn.MaxPool2d):
                features[index] = torch.nn.AvgPool2d(2, 2)
    ref = torch_activations(features, parity_input, PARITY_LAYERS)
    ours = vgg.extract(torch_params, jnp.asarray(parity_input.transpose(0, 2, 3, 1)), PARITY_LAYERS, pooling)
    assert sorted(ours) == sorted(PARITY_LAYERS)
    errors = relative_errors(ours, ref)
    print(f"\nparity with torchvision, {pooling} pooling, input {INPUT_SHAPE} (NCHW)")
    for name in PARITY_LAYERS:
        assert ours[name].shape == ref[name].shape, name
        print(f"  {name:8s} shape {str(ref[name].shape):18s} rel err {errors[name]:.2e}")
    assert max(errors.values()) <= TOLERANCE, errors


def test_avg_and_max_pooling_differ(random_params, parity_input):
    x = jnp.asarray(parity_input.transpose(0, 2, 3, 1))
    a = vgg.extract(random_params, x, ["pool1"], "max")["pool1"]
    b = vgg.extract(random_params, x, ["pool1"], "avg")["pool1"]
    assert float(jnp.max(jnp.abs(a - b))) > 1e-3


def test_only_requested_layers_and_shapes(random_params):
    x = jnp.zeros((2, 40, 24, 3), jnp.float32)
    out = vgg.extract(random_params, x, ["conv3_2", "relu1_2", "pool2"])
    assert set(out) == {"conv3_2", "relu1_2", "pool2"}
    assert out["relu1_2"].shape == (2, 40, 24, 64)
    assert out["pool2"].shape == (2, 10, 6, 128)
    assert out["conv3_2"].shape == (2, 10, 6, 256)
    assert all(v.dtype == jnp.float32 for v in out.values())


def test_nothing_past_the_deepest_layer(random_params):
    # With only conv1_1's parameters, relu1_1 can be computed: nothing deeper is touched.
    params = {"params": {"conv1_1": random_params["params"]["conv1_1"]}}
    x = jnp.ones((1, 8, 8, 3), jnp.float32)
    got = vgg.extract(params, x, ["relu1_1"])["relu1_1"]
    k, b = random_params["params"]["conv1_1"]["kernel"], random_params["params"]["conv1_1"]["bias"]
    want = jax.nn.relu(
        jax.lax.conv_general_dilated(
            x, k, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        + b
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_layer_tables():
    assert len(vgg.CONV_LAYERS) == 16 and len(vgg.LAYERS) == 37
    assert vgg.TORCHVISION_INDEX["conv1_1"] == 0 and vgg.TORCHVISION_INDEX["conv5_4"] == 34
    assert vgg.TORCHVISION_INDEX["conv4_2"] == 21
    assert vgg.downsampling("relu4_2") == 3 and vgg.downsampling("pool5") == 4
    shapes = vgg.param_shapes()["params"]
    assert shapes["conv3_1"]["kernel"].shape == (3, 3, 128, 256)


def test_matches_torchvision_layout(torch_vgg):
    convs = [i for i, m in enumerate(torch_vgg.features) if isinstance(m, torch.nn.Conv2d)]
    assert convs == [vgg.TORCHVISION_INDEX[name] for name in vgg.CONV_LAYERS]
    pools = [i for i, m in enumerate(torch_vgg.features) if isinstance(m, torch.nn.MaxPool2d)]
    assert pools == [vgg.LAYERS.index(f"pool{b}") for b in range(1, 6)]


@pytest.mark.parametrize(
    "layers,pooling,shape,message",
    [
        (["relu6_1"], "max", (1, 8, 8, 3), "unknown VGG-19 layer"),
        ([], "max", (1, 8, 8, 3), "no VGG-19 layer"),
        (["relu1_1"], "min", (1, 8, 8, 3), "pooling must be"),
        (["relu1_1"], "max", (8, 8, 3), "images must be"),
        (["relu1_1"], "max", (1, 8, 8, 4), "images must be"),
    ],
)
def test_extract_errors(random_params, layers, pooling, shape, message):
    with pytest.raises(ValueError, match=message):
        vgg.extract(random_params, jnp.zeros(shape), layers, pooling)
