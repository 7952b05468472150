"""Shared fixtures: random VGG-19 weights, made without torch for the runs, and from torch where a test
compares against torchvision.

* ``random_weights`` / ``random_params``: an nst_jax parameter file written by the project's own writer from
  seeded JAX initialisers (He normal, fan-out, as torchvision initialises VGG-19): no torch needed.
* ``torch_vgg``, ``random_pth``, ``torch_weights`` / ``torch_params``: a seeded random torchvision VGG-19, its
  ``.pth`` and that file converted by the converter's CLI, for parity and converter tests.

Session-scoped, so each is made once per test run. Treat them as read-only (copy a module before changing it,
e.g. ``copy.deepcopy(torch_vgg.features)``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# The programs the tests start must not fill the user's compilation cache (nst_jax.compile_cache); the tests of
# the cache name their own folder.
os.environ.setdefault("NST_JAX_COMPILE_CACHE", "off")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_converter(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Runs ``python -m weights_converter ARGS`` in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "weights_converter", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def torch_vgg():
    """torchvision ``vgg19(weights=None)`` after ``torch.manual_seed(0)``, in eval mode (float32, CPU)."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return torchvision.models.vgg19(weights=None).eval()


@pytest.fixture(scope="session")
def random_pth(torch_vgg, tmp_path_factory) -> str:
    """``torch.save(torch_vgg.state_dict(), path)``: a full VGG-19 checkpoint (classifier included)."""
    import torch

    path = str(tmp_path_factory.mktemp("pth") / "vgg19-random.pth")
    torch.save(torch_vgg.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def torch_weights(random_pth, tmp_path_factory) -> str:
    """The nst_jax parameter file (source torchvision) made from :func:`random_pth` by the converter's CLI."""
    path = str(tmp_path_factory.mktemp("weights") / "vgg19-random.msgpack")
    proc = run_converter(f"--checkpoint={random_pth}", f"--output={path}")
    assert proc.returncode == 0, proc.stderr
    return path


@pytest.fixture(scope="session")
def torch_params(torch_weights):
    """``weights.load(torch_weights).params``: ``{"params": {"conv1_1": {"kernel", "bias"}, ...}}``."""
    from nst_jax import weights

    return weights.load(torch_weights).params


def he_params(seed: int = 0):
    """A VGG-19 parameter tree drawn as torchvision draws its VGG-19 (kernels normal with variance
    2 / (9 * output channels), biases 0), from a JAX key: random, not pretrained."""
    import jax
    import jax.numpy as jnp

    from nst_jax import vgg

    init = jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")
    shapes = vgg.param_shapes()["params"]
    keys = jax.random.split(jax.random.key(seed), len(shapes))
    return {"params": {name: {"kernel": init(key, shapes[name]["kernel"].shape, jnp.float32),
                              "bias": jnp.zeros(shapes[name]["bias"].shape, jnp.float32)}
                       for key, name in zip(keys, sorted(shapes), strict=True)}}


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory) -> str:
    """An nst_jax parameter file of :func:`he_params` written by ``nst_jax.weights.save`` (no torch)."""
    from nst_jax import weights

    path = str(tmp_path_factory.mktemp("weights") / "vgg19-he-random.msgpack")
    weights.save(path, he_params(0), "torchvision", "random He-normal initialisation, seed 0 (not pretrained)")
    return path


@pytest.fixture(scope="session")
def random_params(random_weights):
    """``weights.load(random_weights).params``."""
    from nst_jax import weights

    return weights.load(random_weights).params


def run_on_eight_devices(program: str, *args: str, timeout: int = 900) -> dict:
    """Runs a test program with 8 forced CPU devices (fixed when JAX starts, hence a subprocess) and returns
    the JSON object its last output line holds."""
    import json

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, program, *args], capture_output=True, text=True, cwd=REPO_ROOT, env=env,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
