"""nst_jax.config: every bad config value is refused with one line naming its flag; parsing gives hashable,
typed problems and step settings (the static arguments of the compiled step)."""

from __future__ import annotations

import pytest

from configs import default
from configs import test as test_config
from nst_jax import config as config_lib
from nst_jax import job, losses, placement
from nst_jax.errors import ConfigError


def make(**fields):
    c = test_config.get_config()
    with c.unlocked():
        for name, value in fields.items():
            if "." in name:
                group, field = name.split(".")
                c[group][field] = value
            else:
                c[name] = value
    return c


BAD = {
    "negative steps": ({"steps": -5}, "--steps=-5: must be an integer >= 0"),
    "size 0": ({"size": 0}, "--size=0: must be an integer >= 1"),
    "style_size 0": ({"style_size": 0}, "--style_size=0: must be an integer >= 1"),
    "chunk 0": ({"chunk": 0}, "--chunk=0: must be an integer >= 1"),
    "log_every 0": ({"log_every": 0}, "--log_every=0: must be an integer >= 1"),
    "negative save_every": ({"save_every": -1}, "--save_every=-1: must be an integer >= 0"),
    "scales 0": ({"scales": 0}, "--scales=0: must be an integer >= 1"),
    "strips 0": ({"strips": 0}, "--strips=0: must be an integer >= 1"),
    "block_size 0": ({"block_size": 0}, "--block_size=0"),
    "unknown kernel": ({"kernel": "sobel"}, "--kernel=sobel: unknown method 'sobel'"),
    "empty kernel": ({"kernel": " , "}, "--kernel is empty"),
    "kernel twice": ({"kernel": "gram,gram"}, "--kernel=gram,gram: a method appears twice"),
    "fusion weights: too few": ({"kernel": "linear,gaussian", "kernel_weights": "0.5"},
                                "--kernel_weights=0.5: 1 weight(s) for 2 method(s) in --kernel=linear,gaussian"),
    "fusion weights: too many": ({"kernel": "linear,bn", "kernel_weights": "0.2,0.3,0.5"},
                                 "--kernel_weights=0.2,0.3,0.5: 3 weight(s) for 2 method(s)"),
    "fusion weights: NaN": ({"kernel": "linear,bn", "kernel_weights": "nan,1"},
                            "--kernel_weights='nan,1': weights must be finite and non-negative"),
    "fusion weights: negative": ({"kernel": "linear,bn", "kernel_weights": "1,-1"},
                                 "--kernel_weights='1,-1': weights must be finite and non-negative"),
    "fusion weights: not numbers": ({"kernel": "linear,bn", "kernel_weights": "a,b"},
                                    "--kernel_weights='a,b': expected comma-separated numbers"),
    "style_weight NaN": ({"style_weight": float("nan")}, "--style_weight=nan: must be a finite number >= 0"),
    "style_weight negative": ({"style_weight": -1.0}, "--style_weight=-1.0: must be a finite number >= 0"),
    "content_weight NaN": ({"content_weight": float("nan")}, "--content_weight=nan: must be a finite number"),
    "content_weight negative": ({"content_weight": -2.0}, "--content_weight=-2.0: must be a finite number"),
    "tv_weight infinite": ({"tv_weight": float("inf")}, "--tv_weight=inf: must be a finite number >= 0"),
    "tv_weight negative": ({"tv_weight": -0.5}, "--tv_weight=-0.5: must be a finite number >= 0"),
    "lr 0": ({"lr": 0.0}, "--lr=0.0: must be > 0"),
    "style_scale 0": ({"style_scale": 0.0}, "--style_scale=0.0: must be > 0"),
    "gamma negative": ({"gaussian_gamma": -1.0}, "--gaussian_gamma=-1.0: must be a finite number >= 0"),
    "unknown optimizer": ({"optimizer": "rmsprop"}, "--optimizer=rmsprop: expected one of adam, lbfgs, sgd_paper"),
    "unknown balance": ({"balance": "half"}, "--balance=half: expected one of auto, none"),
    "unknown style_resize": ({"style_resize": "crop"}, "--style_resize=crop: expected one of"),
    "unknown pooling": ({"pooling": "min"}, "--pooling=min: expected max or avg"),
    "unknown estimator": ({"gaussian_estimator": "exact"}, "--gaussian_estimator=exact: expected one of"),
    "unknown dtype": ({"dtype": "float16"}, "--dtype=float16: expected one of float32, bfloat16"),
    "unknown preserve_colors": ({"preserve_colors": "all"}, "--preserve_colors=all: expected one of"),
    "poly_d 0": ({"poly_d": 0}, "--poly_d=0: must be an integer >= 1"),
    "poly_c negative": ({"poly_c": -1.0}, "--poly_c=-1.0: must be a finite number >= 0"),
    "rff_features 0": ({"rff_features": 0}, "--rff_features=0: must be an integer >= 1"),
    "swd_projections 0": ({"swd_projections": 0}, "--swd_projections=0: must be an integer >= 1"),
    "mkmmd_scales 0": ({"mkmmd_scales": "0,1"}, "--mkmmd_scales=0,1: expected positive numbers, e.g. 0.5,1,2"),
    "mkmmd_scales text": ({"mkmmd_scales": "a"}, "--mkmmd_scales=a: expected positive numbers"),
    "unknown layer": ({"style_layers": "relu1_1,relu9_9", "layer_weights": "1,1"}, "--style_layers=relu1_1,relu9_9"),
    "layer weights count": ({"layer_weights": "1,1"}, "--layer_weights=1,1: 2 weight(s) for 3 style layer(s)"),
    "bad style_blend": ({"style_blend": "1,x"}, "--style_blend='1,x': expected comma-separated numbers"),
    "strips with a pairwise method at relu1_1": (
        {"strips": 2, "kernel": "gaussian"},
        "--strips=2: the gaussian method (gamma=None, estimator=linear, num_features=64) needs all of relu1_1's"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_value_is_one_line_naming_the_flag(case):
    fields, message = BAD[case]
    with pytest.raises(ConfigError) as e:
        config_lib.check(make(**fields))
    text = str(e.value)
    assert message in text and "\n" not in text, text


def test_the_shipped_configs_pass():
    for c in (default.get_config(), test_config.get_config()):
        config_lib.check(c)
    config_lib.check(make(strips=2, kernel="gaussian", style_layers="relu3_1", layer_weights="1"))


def test_blend_weights():
    assert config_lib.blend_weights(make(), 3) == pytest.approx((1 / 3,) * 3)
    assert config_lib.blend_weights(make(style_blend="1,3"), 2) == (0.25, 0.75)
    with pytest.raises(ConfigError, match="2 weight"):
        config_lib.blend_weights(make(style_blend="1,3"), 3)
    with pytest.raises(ConfigError, match="sum to 0"):
        config_lib.blend_weights(make(style_blend="0,0"), 2)


def test_terms_take_each_methods_parameters_from_the_config():
    c = make(kernel="poly, Gaussian", kernel_weights="0.25,0.75", poly_c=0.5, poly_d=3, gaussian_gamma=2.0,
             gaussian_estimator="full", block_size=32, rff_features=16)
    poly, gauss = config_lib.parse_terms(c)
    assert poly == losses.StyleTerm(losses.Poly(c=0.5, d=3), 0.25)
    assert gauss == losses.StyleTerm(losses.Gaussian(gamma=2.0, estimator="full", block_size=32, num_features=16),
                                     0.75)


def test_problem_and_settings_are_hashable_values():
    a, b = make(kernel="linear,bn", kernel_weights="1,2"), make(kernel="linear, bn", kernel_weights="1.0,2")
    assert config_lib.problem(a) == config_lib.problem(b)
    assert hash(config_lib.problem(a)) == hash(config_lib.problem(b))
    assert config_lib.problem(a) != config_lib.problem(make(kernel="linear,bn", kernel_weights="1,3"))
    sa, sb = config_lib.step_settings(a, "torchvision"), config_lib.step_settings(b, "torchvision")
    assert sa == sb and hash(sa) == hash(sb)
    # Every optimiser setting is part of the compiled step's key: none can go stale.
    for field, value in [("lr", 0.1), ("sgd.lr", 0.01), ("sgd.momentum", 0.5), ("sgd.decay_every", 7),
                         ("steps", 99)]:
        assert config_lib.step_settings(make(**{field: value}), "torchvision") != sa, field
    assert config_lib.step_settings(a, "caffe") != sa


def test_equal_configs_share_one_compiled_step_and_any_setting_change_recompiles(random_weights, monkeypatch):
    import numpy as np

    from nst_jax import demo, weights

    loaded = weights.load(random_weights)
    executables = []
    real = placement._batched

    class Spy:  # records the executable each run compiles
        def __init__(self, compiled):
            self.compiled = compiled

        def lower(self, *args, **kwargs):
            lowered = self.compiled.lower(*args, **kwargs)

            class Lowered:
                def compile(self):
                    compiled = lowered.compile()
                    executables.append(compiled.runtime_executable())
                    return compiled
            return Lowered()

        def __call__(self, *args, **kwargs):
            return self.compiled(*args, **kwargs)

    monkeypatch.setattr(placement, "_batched", lambda name, *args: Spy(real(name, *args)) if name == "chunk"
                        else real(name, *args))
    fields = {"kernel": "gram", "size": 16, "steps": 2, "chunk": 2, "style_layers": "relu1_1", "layer_weights": "1",
              "content_layers": "relu1_1", "balance": "none"}
    rgb = np.asarray(demo.content_image(16), np.float32)
    for lr in (0.05, 0.05, 0.07):  # two equal configs built separately, then another learning rate
        c = make(**fields, lr=lr)
        job.run(config_lib.problem(c), config_lib.step_settings(c, loaded.source), 2,
                [job.JobInputs(config_lib.parse(c), rgb, [rgb], "content", ["style"])], loaded)
    assert executables[0] is executables[1]
    assert executables[2] is not executables[0]


def test_chunk_length_ends_on_snapshots_and_checkpoints():
    c = make(chunk=12, steps=100)
    assert 12 % config_lib.chunk_length(c) == 0
    assert config_lib.chunk_length(c, (4,)) in (1, 2, 4)
    assert config_lib.chunk_length(make(chunk=25, steps=3)) <= 3
