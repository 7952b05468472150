"""Style methods as objects: the registry, parameters, hashing, and adding a method with one class.

Each method's values are checked against NumPy in test_losses.py (one test class per method); this file
checks the interface every method shares.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import test as test_config
from nst_jax import config as config_lib
from nst_jax import losses
from nst_jax.errors import ConfigError

RNG = np.random.default_rng(3)
X = RNG.normal(size=(30, 4)).astype(np.float32)
Y = RNG.normal(size=(22, 4)).astype(np.float32) + 0.5


def test_registry_maps_the_kernel_names_to_classes():
    # The built-in families in order (moments, Gaussian kernels, transport), then any method added as a module.
    assert losses.METHODS[:9] == ("gram", "linear", "poly", "bn", "w2", "coral", "gaussian", "mkmmd", "swd")
    assert losses.METHODS == tuple(losses.REGISTRY)
    assert [losses.REGISTRY[n] for n in losses.METHODS[:9]] == [losses.Gram, losses.Linear, losses.Poly, losses.BN,
                                                                losses.W2, losses.CORAL, losses.Gaussian,
                                                                losses.MKMMD, losses.SWD]
    for name in losses.METHODS:
        assert losses.get_method(name).name == name


@pytest.mark.parametrize("name, params, message", [
    ("Gaussian", {}, "unknown style method 'Gaussian'; known methods: gram, linear, poly, bn, w2, coral"),
    ("poly", {"gamma": 1.0}, "unknown parameter(s) gamma for style method 'poly'; it takes: c, d, estimator"),
    ("gram", {"c": 1.0}, "it takes: none"),
    ("poly", {"estimator": "rff"}, "the rff estimator needs the gaussian kernel"),
    ("gaussian", {"estimator": "exact"}, "style method 'gaussian': estimator='exact': expected one of full, "),
    ("poly", {"d": 0}, "style method 'poly': d=0: must be an integer >= 1"),
    ("mkmmd", {"scales": "1,x"}, "style method 'mkmmd': scales='1,x': expected positive numbers"),
])
def test_bad_names_and_parameters(name, params, message):
    with pytest.raises(ValueError) as e:
        losses.get_method(name, **params)
    assert message in str(e.value)


def test_each_method_reads_its_parameters_from_the_config_fields_it_names():
    config = test_config.get_config()
    for name, cls in losses.REGISTRY.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        for param, field in cls.config_fields.items():
            assert param in fields and field in config, (name, param, field)
        method = cls.from_config(config)
        for param, field in cls.config_fields.items():
            value = config[field]
            if param == "scales":  # mkmmd's, written as text in the config
                value = tuple(float(v) for v in value.split(","))
            assert getattr(method, param) == value, (name, param)
    assert losses.Poly.config_fields == {"c": "poly_c", "d": "poly_d"}


def test_methods_are_hashable_values_with_their_defaults():
    assert losses.Poly() == losses.get_method("poly", c=1.0) and hash(losses.Poly()) == hash(losses.Poly(c=1.0))
    assert losses.Poly(c=0.0) != losses.Poly()
    assert losses.Gaussian().params() == {"gamma": None, "estimator": "linear", "block_size": 512,
                                          "num_features": 1024}
    assert losses.StyleTerm("poly", 0.5, {"c": 0.0}) == losses.StyleTerm(losses.Poly(c=0.0), 0.5)
    with pytest.raises(ValueError, match="given with the method object"):
        losses.StyleTerm(losses.Poly(), 1.0, {"c": 2.0})


@pytest.mark.parametrize("method", [losses.Gram(), losses.Linear(), losses.Poly(), losses.Poly(estimator="unbiased"),
                                    losses.Poly(d=3), losses.Gaussian(estimator="full"), losses.BN()],
                         ids=repr)
def test_object_and_name_interfaces_agree(method):
    by_object = method.loss(jnp.asarray(X), method.target(jnp.asarray(Y)), key=jax.random.key(0))
    by_name = losses.style_loss(method.name, jnp.asarray(X), losses.style_target(method.name, jnp.asarray(Y),
                                                                                  **method.params()),
                                key=jax.random.key(0), **method.params())
    assert float(by_object) == float(by_name)
    assert losses.paper_scale(method.name, 30, 4, **method.params()) == method.paper_scale(30, 4)
    if method.streamable:
        target = method.target(jnp.asarray(Y))
        sums = method.sums(jnp.asarray(X), target, jnp.ones(30))
        np.testing.assert_allclose(method.loss_from_sums(losses.SampleSums(sums, 30), target), by_object,
                                   rtol=1e-5)
    else:
        with pytest.raises(ValueError, match="needs all samples at once"):
            method.sums(jnp.asarray(X), {}, jnp.ones(30))


@dataclasses.dataclass(frozen=True)
class MeanAbs(losses.StyleMethod):
    """A method added with one class: mean over channels of |mean x - mean y| (a test method, not a paper's)."""

    name: ClassVar[str] = "meanabs"
    power: float = 1.0

    config_fields: ClassVar[dict[str, str]] = {"power": "poly_c"}

    def target(self, y):
        return {"mean": jnp.mean(y, axis=0)}

    def loss(self, x, target, *, key=None):
        return jnp.mean(jnp.abs(jnp.mean(x, axis=0) - target["mean"]) ** self.power)

    def paper_scale(self, m, n):
        return float(m)


class TestAddingAMethod:
    """What the README promises: one class, registered, is a --kernel name in runs, fusions and blends."""

    @pytest.fixture(autouse=True)
    def registered(self, monkeypatch):
        monkeypatch.setitem(losses.REGISTRY, MeanAbs.name, MeanAbs)

    def test_loss_against_numpy(self):
        got = MeanAbs().loss(jnp.asarray(X), MeanAbs().target(jnp.asarray(Y)))
        np.testing.assert_allclose(got, np.mean(np.abs(X.mean(0) - Y.mean(0))), rtol=1e-6)

    def test_through_the_config_in_a_fusion_and_a_blend(self):
        c = test_config.get_config()
        c.kernel, c.kernel_weights, c.poly_c = "gram,meanabs", "1,2", 2.0
        config_lib.check(c)
        terms = config_lib.parse_terms(c)
        assert terms[1] == losses.StyleTerm(MeanAbs(power=2.0), 2.0)
        features = {"relu1_1": jnp.asarray(X)}
        targets = losses.fused_style_targets({"relu1_1": jnp.asarray(Y)}, terms)
        total, per_term = losses.fused_style_loss(features, targets, terms, {"relu1_1": 1.0})
        np.testing.assert_allclose(per_term["meanabs"], 2.0 * np.mean(np.abs(X.mean(0) - Y.mean(0)) ** 2), rtol=1e-5)
        # A blend of two styles falls back to the pooled samples of the mixture.
        mixed = losses.mixture_style_target(MeanAbs(), [jnp.asarray(Y), jnp.asarray(Y + 1.0)], [0.5, 0.5])
        np.testing.assert_allclose(mixed["mean"], Y.mean(0) + 0.5, rtol=1e-5)

    def test_strips_refuse_it_at_block_1(self):
        c = test_config.get_config()
        c.kernel, c.strips = "meanabs", 2
        with pytest.raises(ConfigError, match="the meanabs method"):
            config_lib.check(c)
