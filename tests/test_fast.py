"""Applying feed-forward models (nst_jax.fast): the Python API at any size, adain's styles, blend and alpha, colour
preservation, and the command line's errors (one line, exit 2, nothing written)."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO_ROOT, he_params

from nst_jax import fast, image
from nst_jax.errors import ConfigError
from nst_jax.nets import adain, johnson, model_file

SMALL = {"johnson_channels": [8, 16, 32], "johnson_residual_blocks": 1}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Untrained model files: {"johnson", "adain", "damaged"} paths, and a content and style image."""
    root = tmp_path_factory.mktemp("models")
    net = johnson.TransformerNet(channels=(8, 16, 32), residual_blocks=1)
    params = jax.jit(lambda k: johnson.init_params(k, net))(jax.random.key(0))
    paths = {"johnson": str(root / "johnson.msgpack"), "adain": str(root / "adain.msgpack")}
    model_file.save(paths["johnson"], "johnson", {"net": params}, "torchvision", SMALL, 0)
    dec = jax.jit(adain.init_params)(jax.random.key(1))
    model_file.save(paths["adain"], "adain", {"net": dec, "encoder": adain.encoder_params(he_params(0))},
                    "torchvision", {}, 0)
    data = bytearray(open(paths["johnson"], "rb").read())
    at = bytes(data).index(np.asarray(params["params"]["conv2"]["conv"]["kernel"], "<f4").tobytes()[:64])
    data[at + 2] ^= 0x01  # one bit of one weight
    paths["damaged"] = str(root / "damaged.msgpack")
    open(paths["damaged"], "wb").write(bytes(data))
    rng = np.random.default_rng(0)
    paths["content"], paths["style"] = str(root / "content.png"), str(root / "style.png")
    image.save_image(paths["content"], rng.random((31, 45, 3)))
    image.save_image(paths["style"], rng.random((24, 24, 3)))
    return paths


def test_johnson_api_keeps_odd_sizes(models):
    stylize = fast.load(models["johnson"])
    assert fast.load(models["johnson"]) is stylize  # cached per file
    for hw in ((97, 131), (31, 45)):
        out = stylize(np.random.default_rng(1).random((*hw, 3)))
        assert out.shape == (*hw, 3) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    with pytest.raises(ConfigError, match="built in"):
        stylize(np.zeros((8, 8, 3)), styles=[np.zeros((8, 8, 3))])


@pytest.mark.slow
def test_adain_api_blend_and_alpha(models):
    stylize = fast.load(models["adain"])
    rng = np.random.default_rng(2)
    c, s1, s2 = rng.random((21, 19, 3)), rng.random((16, 16, 3)), rng.random((16, 24, 3))
    one = stylize(c, styles=[s1])
    assert one.shape == (21, 19, 3)
    np.testing.assert_allclose(stylize(c, styles=[s1, s2], blend=[1, 0]), one, atol=1e-5)
    np.testing.assert_allclose(stylize(c, styles=[s1], alpha=0.0), stylize(c, styles=[s2], alpha=0.0), atol=1e-5)
    with pytest.raises(ConfigError, match="needs a style"):
        stylize(c)
    with pytest.raises(ConfigError, match="style_blend"):
        stylize(c, styles=[s1, s2], blend=[1])


def test_preserve_luminance_keeps_the_content_chroma():
    from nst_jax import color

    rng = np.random.default_rng(3)
    content, out = rng.random((6, 5, 3)).astype(np.float32), rng.random((6, 5, 3)).astype(np.float32)
    kept = fast.preserve("luminance", out, content)
    np.testing.assert_allclose(kept, color.recombine_luminance(out, content), atol=1e-6)
    assert fast.preserve("none", out, content) is out


def run_fast(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nst_jax.fast", *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})


CASES = [
    (["--model=damaged", "--content=content"], "damaged file"),
    (["--model=adain", "--content=content"], "needs --style"),
]
SLOW_CASES = [
    (["--model=content", "--content=content"], "not an nst_jax feed-forward model"),
    (["--model=johnson", "--content=content", "--style=style"], "adain networks"),
    (["--model=johnson", "--content=absent.png"], "no such file"),
    (["--model=adain", "--content=content", "--style=style", "--alpha=2"], "--alpha"),
    (["--model=johnson", "--content=content", "--size=0"], "--size"),
    (["--model=johnson", "--content=content", "--nonsense=1"], "nonsense"),
]


@pytest.mark.parametrize("args, message", CASES + [pytest.param(*c, marks=pytest.mark.slow) for c in SLOW_CASES])
def test_cli_errors_are_one_line_and_write_nothing(models, tmp_path, args, message):
    out = tmp_path / "sub" / "out.png"
    args = [a.split("=")[0] + "=" + models.get(a.split("=", 1)[1], a.split("=", 1)[1]) for a in args]
    proc = run_fast(*args, f"--output={out}")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "sub").exists()


@pytest.mark.slow
def test_cli_folder_and_size(models, tmp_path):
    src = tmp_path / "in"
    os.makedirs(src / "deeper")
    for name in ("a.png", "deeper/b.png"):
        image.save_image(str(src / name), np.random.default_rng(4).random((33, 50, 3)))
    proc = run_fast(f"--model={models['johnson']}", f"--content_dir={src}", f"--output_dir={tmp_path / 'out'}",
                    "--size=25", "--preserve_colors=luminance")
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "deeper__b.png"]
    assert image.load_image(str(tmp_path / "out" / "a.png")).shape == (*image.resized_shape((33, 50), 25), 3)
