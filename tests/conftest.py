"""Shared fixtures: a seeded random torchvision VGG-19, its .pth and its converted nst_jax parameter file.

Session-scoped, so the model is initialised, saved and converted once per test run. Treat them as read-only
(copy a module before changing it, e.g. ``copy.deepcopy(torch_vgg.features)``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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
def random_weights(random_pth, tmp_path_factory) -> str:
    """The nst_jax parameter file (source torchvision) made from :func:`random_pth` by the converter's CLI."""
    path = str(tmp_path_factory.mktemp("weights") / "vgg19-random.msgpack")
    proc = run_converter(f"--checkpoint={random_pth}", f"--output={path}")
    assert proc.returncode == 0, proc.stderr
    return path


@pytest.fixture(scope="session")
def random_params(random_weights):
    """``weights.load(random_weights).params``: ``{"params": {"conv1_1": {"kernel", "bias"}, ...}}``."""
    from nst_jax import weights

    return weights.load(random_weights).params
