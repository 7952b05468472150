"""The PyTorch twin of the Johnson network and its training loss (benchmarks/torch_fast.py) computes what
nst_jax's does: same output from converted parameters, same loss and normalisers on one batch. This is what
makes benchmarks.fast a comparison of one algorithm. Random VGG-19 weights (torchvision's initialisation)."""

from __future__ import annotations

import copy
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/ is not installed
from benchmarks import torch_fast as tf  # noqa: E402

SIZE, BATCH = 32, 2


def _perturbed(params, seed: int = 1):
    """Every leaf moved by noise, so that a swapped or transposed key changes the output (fresh instance norms
    are exactly 1 and 0, fresh biases 0)."""
    import jax

    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(treedef, [np.asarray(v) + 0.1 * rng.standard_normal(np.shape(v)).astype(np.float32)
                                        for v in leaves])


@pytest.fixture(scope="module")
def nets():
    import jax

    from nst_jax.nets import johnson

    params = _perturbed(jax.jit(johnson.init_params)(jax.random.key(0)))
    net = tf.TransformerNet()
    net.load_state_dict(tf.from_flax(net, params))
    return params, net


@pytest.fixture(scope="module")
def problem():
    from configs import train_johnson
    from nst_jax import trainer

    config = train_johnson.get_config()
    config.size, config.batch = SIZE, BATCH
    return trainer.problem(config)


def test_output_matches_the_jax_network(nets):
    import jax
    import jax.numpy as jnp

    from nst_jax.nets import johnson

    params, net = nets
    x = np.random.default_rng(0).random((2, 34, 38, 3), dtype=np.float32)  # not multiples of 4: pad and crop
    want = np.asarray(jax.jit(johnson.stylize)(params, jnp.asarray(x)))
    with torch.no_grad():
        got = tf.stylize(net, tf.to_nchw(x)).numpy().transpose(0, 2, 3, 1)
    assert want.shape == got.shape == x.shape
    assert np.abs(want).max() > 0.1  # a real output, not a collapsed one
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_converter_names_what_does_not_fit(nets):
    params, _ = nets
    with pytest.raises(ValueError, match="missing res6.conv1.conv.weight"):
        tf.from_flax(tf.TransformerNet(residual_blocks=6), params)
    with pytest.raises(ValueError, match=r"unused .*res5/conv1/conv/kernel"):
        tf.from_flax(tf.TransformerNet(residual_blocks=4), params)
    with pytest.raises(ValueError, match="wrong shape conv1.conv.weight"):
        tf.from_flax(tf.TransformerNet(channels=(16, 64, 128)), params)


@pytest.mark.slow  # three VGG-19 programs to compile: about 20 s
def test_training_loss_and_normalisers_match_nst_jax(nets, problem, torch_vgg):
    import jax
    import jax.numpy as jnp

    from nst_jax import training, vgg
    from weights_converter import convert

    params, net = nets
    vgg_params = convert.to_flax({k: v.numpy() for k, v in torch_vgg.state_dict().items()})
    rng = np.random.default_rng(2)
    content = rng.random((BATCH, SIZE, SIZE, 3), dtype=np.float32)
    style = rng.random((40, 36, 3), dtype=np.float32)
    batch = {"content": jnp.asarray(content)}
    style_target = jax.jit(training.style_targets, static_argnums=0)(problem, vgg_params, jnp.asarray(style))
    norms = jax.jit(training.reference_norms, static_argnums=0)(problem, params, vgg_params, batch,
                                                                 jax.random.key(0), style_target)
    total, terms = jax.jit(training.batch_loss, static_argnums=0)(problem, params, vgg_params, norms, batch,
                                                                  jax.random.key(1), style_target)

    # benchmarks.torch_baseline.load_features without the file: torchvision's vgg19().features, cut, frozen.
    features = copy.deepcopy(torch_vgg.features[: vgg.LAYERS.index(problem.layers[-1]) + 1]).requires_grad_(False)
    trainer = tf.Trainer(net, features, style, content_layers=problem.content_layers,
                         style_layers=problem.style_layers, layer_weights=problem.layer_weights,
                         content_weight=problem.content_weight, style_weight=problem.style_weight,
                         tv_weight=problem.tv_weight, lr=problem.lr)
    x = tf.to_nchw(content)
    own = tf.reference_norms(trainer, x)
    np.testing.assert_allclose(own["content"], float(norms["content"]), rtol=1e-4)
    assert own["style"].keys() == norms["style"].keys()
    for k, v in own["style"].items():
        np.testing.assert_allclose(v, float(norms["style"][k]), rtol=1e-4)

    trainer.set_norms(jax.device_get(norms))
    with torch.no_grad():
        t_total, t_terms = trainer.loss(x)
    assert all(float(terms[k]) > 0 for k in ("content", "style", "tv"))
    for k in ("content", "style", "tv", "total"):
        np.testing.assert_allclose(float(t_terms[k]), float(terms[k]), rtol=1e-4)

