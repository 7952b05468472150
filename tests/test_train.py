"""Training feed-forward networks (nst_jax.trainer, nst_jax.training, nst_jax.data) on small generated images with
random VGG-19 weights: the loss falls; each method family brings held-out outputs nearer the style by its own
distance; 1 and 8 devices agree; an interrupted run resumes bit for bit; user errors are one line and exit 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT, run_on_eight_devices

from configs import train_adain, train_johnson
from nst_jax import data, fast, image, trainer, training, weights
from nst_jax.errors import ConfigError, UserError
from nst_jax.nets import model_file


def _picture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random photo-like image: a colour gradient with a few soft blobs."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    rgb = np.stack([yy, xx, 1 - yy], -1) * rng.uniform(0.3, 1.0, 3)
    for _ in range(3):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.3)
        rgb += rng.uniform(-0.5, 0.5, 3) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / r**2)[..., None]
    return np.clip(rgb, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, random_weights):
    """{"data": 8 pictures and one unreadable file (in a subfolder), "styles": 3 paintings, "style": one,
    "weights": random He-normal VGG-19}."""
    root = tmp_path_factory.mktemp("train_data")
    rng = np.random.default_rng(0)
    os.makedirs(root / "data" / "sub")
    for i in range(8):
        image.save_image(str(root / "data" / ("sub" if i % 2 else "") / f"p{i}.png"), _picture(rng, 40, 48))
    (root / "data" / "broken.jpg").write_bytes(b"not a jpeg")
    os.makedirs(root / "styles")
    yy, xx = np.mgrid[0:48, 0:48]
    for i, period in enumerate((4, 6, 9)):
        stripes = 0.5 + 0.5 * np.sin((xx + (i + 1) * yy) * 2 * np.pi / period)
        style = np.stack([stripes, 1 - stripes, 0.5 * stripes], -1).astype(np.float32)
        image.save_image(str(root / "styles" / f"s{i}.png"), style)
    return {"data": str(root / "data"), "styles": str(root / "styles"), "style": str(root / "styles" / "s0.png"),
            "weights": random_weights}


def small_config(folders, workdir, net="johnson", **kw):
    c = (train_johnson if net == "johnson" else train_adain).get_config()
    c.update(dict(data=folders["data"], weights=folders["weights"], workdir=str(workdir), size=32, style_size=32,
                  batch=2, steps=20, lr=1e-2, log_every=5, sample_every=10, checkpoint_every=10, holdout=2, workers=2,
                  johnson_channels=(8, 16, 32), johnson_residual_blocks=1))
    if net == "johnson":
        c.style = folders["style"]
    else:
        c.style_data = folders["styles"]
        c.holdout = 1
        c.lr = 1e-3
    c.update(kw)
    return c


def metrics(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


# --------------------------------------------------------------------------------------------------- fast tier

def test_data_lists_recursively_and_refuses_empty(tmp_path, folders):
    files = data.list_images(folders["data"])
    assert len(files) == 9 and any("/sub/" in f for f in files)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image files"):
        data.list_images(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="no such folder"):
        data.list_images(str(tmp_path / "absent"))


def test_data_position_restores_the_same_crops(folders):
    files = data.list_images(folders["data"])
    a = data.Batches({"content": (files, 3)}, 2, 16, threads=2)
    next(a), next(a)
    state = a.state()
    expected = [next(a)["content"] for _ in range(5)]
    b = data.Batches({"content": (files, 3)}, 2, 16, threads=1)
    b.restore(state)
    for want in expected:
        np.testing.assert_array_equal(next(b)["content"], want)
    assert b.skipped >= 1  # broken.jpg comes round within 7 batches of 9 files


def test_bad_config_values_are_refused(folders, tmp_path):
    for field, value, match in (("net", "unet", "--net"), ("kernel", "nope", "unknown method"),
                                ("size", 8, "--size"), ("layer_weights", "1,1", "layer_weights"),
                                ("content_layers", "relu2_2", "adain")):
        c = small_config(folders, tmp_path / "w", net="adain" if field == "content_layers" else "johnson")
        c[field] = value
        with pytest.raises(ConfigError, match=match):
            trainer.problem(c)


def run_train(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nst_jax.train", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=timeout, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_unreadable_data_is_one_line_and_writes_nothing(tmp_path, folders):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"\x89PNG broken")
    work = tmp_path / "w"
    proc = run_train("--net=johnson", f"--data={tmp_path / 'bad'}", f"--style={folders['style']}", "--size=32",
                     f"--weights={folders['weights']}", f"--workdir={work}", "--config.holdout=0")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "no readable image" in proc.stderr
    assert not work.exists()


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--net=johnson", "--data=/nonexistent"], "no such folder"),
    (["--net=adain", "--data=DATA"], "--style_data is required"),
    (["--net=johnson", "--data=DATA"], "needs --style"),
    (["--net=johnson", "--data=DATA", "--style=STYLE", "--kernel=nope"], "unknown method"),
    (["--net=unet"], "net"),
    (["--net=johnson", "--data=DATA", "--style=STYLE", "--resume"], "no checkpoint"),
])
def test_cli_errors(tmp_path, folders, args, message):
    work = tmp_path / "w"
    args = [a.replace("DATA", folders["data"]).replace("STYLE", folders["style"]) for a in args]
    proc = run_train(*args, f"--weights={folders['weights']}", f"--workdir={work}")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and message in proc.stderr, proc.stderr
    assert not work.exists()


# --------------------------------------------------------------------------------------------------- slow tier

@pytest.fixture(scope="module")
def trained(folders, tmp_path_factory):
    work = tmp_path_factory.mktemp("johnson_gram")
    assert trainer.run(small_config(folders, work)) == 0
    return work


@pytest.mark.slow
def test_training_writes_its_workdir_and_the_loss_falls(trained):
    lines = metrics(trained)
    assert [m["step"] for m in lines] == [5, 10, 15, 20]
    assert lines[-1]["loss"]["total"] < 0.5 * lines[0]["loss"]["total"], lines
    assert lines[-1]["skipped"] >= 1 and lines[0]["images_per_s"] > 0
    assert os.listdir(trained / "tensorboard")
    assert sorted(os.listdir(trained / "samples"))[0].startswith("step_0000010_")
    assert trainer.latest_checkpoint(str(trained)) == 20
    m = model_file.load(str(trained / "model.msgpack"))
    assert (m.net, m.step, m.config["kernel"]) == ("johnson", 20, "gram")


def held_out_distance(c, model_path) -> float:
    """The mean style distance (the run's own method and layers, the loss code's) of the network's held-out
    outputs to the style image."""
    from nst_jax import fast

    prob = trainer.problem(c)
    files = data.split_holdout(data.list_images(c.data), 2)[1]
    vgg_params = weights.load(c.weights).params
    target = training.style_targets(prob, vgg_params, jnp.asarray(image.load_image(c.style, c.style_size)))
    stylize = fast.load(model_path)
    outs = jnp.asarray(np.stack([stylize(image.load_image(f, 32)[:32, :32]) for f in files]))
    return float(jnp.mean(training.style_distance(prob, vgg_params, outs, target)))


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["gram", "gaussian", "bn", "swd"])
def test_each_method_family_brings_outputs_nearer_the_style(folders, tmp_path, kernel):
    before, after = tmp_path / "before", tmp_path / "after"
    assert trainer.run(small_config(folders, before, kernel=kernel, steps=0)) == 0
    c = small_config(folders, after, kernel=kernel, steps=30, sample_every=0, checkpoint_every=0)
    assert trainer.run(c) == 0
    d0, d1 = held_out_distance(c, str(before / "model.msgpack")), held_out_distance(c, str(after / "model.msgpack"))
    assert d1 < 0.8 * d0, (kernel, d0, d1)  # a bounded kernel (gaussian) saturates: less than halved


@pytest.mark.slow
def test_interrupted_run_resumes_bit_for_bit(folders, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert trainer.run(small_config(folders, whole, steps=8, checkpoint_every=0)) == 0
    c = small_config(folders, parts, steps=8, checkpoint_every=0)
    calls = []
    stop_at_4 = lambda: calls.append(1) or len(calls) > 4  # noqa: E731  (polled before each step)
    assert trainer.run(c, should_stop=stop_at_4) == trainer.EXIT_INTERRUPTED
    assert trainer.latest_checkpoint(str(parts)) == 4
    assert trainer.run(c, resume=True) == 0
    a, b = (model_file.load(str(w / "model.msgpack")) for w in (whole, parts))
    assert a.params_sha256 == b.params_sha256
    assert [m["loss"] for m in metrics(whole)] == [m["loss"] for m in metrics(parts)]


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_exits_130(folders, tmp_path):
    work = tmp_path / "w"
    c = small_config(folders, work)
    args = ["--net=johnson", f"--data={c.data}", f"--style={c.style}", f"--weights={c.weights}", f"--workdir={work}",
            "--size=32", "--batch=2", "--steps=100000", "--config.log_every=1", "--config.johnson_channels=(8,16,32)",
            "--config.johnson_residual_blocks=1", "--config.checkpoint_every=0"]
    proc = subprocess.Popen([sys.executable, "-m", "nst_jax.train", *args], cwd=REPO_ROOT, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    deadline = time.time() + 300
    while not os.path.exists(work / "metrics.jsonl") or not metrics(work):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    step = trainer.latest_checkpoint(str(work))
    assert step is not None and step >= 1 and "--resume" in err
    proc = run_train(*[a.replace("--steps=100000", f"--steps={step + 2}") for a in args], "--resume")
    assert proc.returncode == 0, proc.stderr
    assert metrics(work)[-1]["step"] == step + 2


@pytest.mark.slow
def test_one_and_eight_devices_train_alike(folders, tmp_path):
    program = os.path.join(REPO_ROOT, "tests", "programs", "train_on_devices.py")
    args = [folders["data"], folders["style"], folders["weights"]]
    one = subprocess.run([sys.executable, program, *args, str(tmp_path / "one")], capture_output=True, text=True,
                         cwd=REPO_ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    eight = run_on_eight_devices(program, *args, str(tmp_path / "eight"))
    assert (json.loads(one.stdout.strip().splitlines()[-1])["devices"], eight["devices"]) == (1, 8)
    np.testing.assert_allclose(eight["losses"], json.loads(one.stdout.strip().splitlines()[-1])["losses"], rtol=1e-4)
    # The networks, not their parameters: a convolution's bias just before an instance norm has no gradient
    # but rounding noise, which Adam scales to steps of the learning rate in either direction, so those biases
    # differ between device counts while the outputs (which the norm makes independent of them) agree; Adam's
    # normalisation does the same, less, to other small gradients: within half a level of an 8-bit image.
    a, b = (fast.load(str(tmp_path / w / "model.msgpack")) for w in ("one", "eight"))
    photo = np.random.default_rng(0).uniform(0, 1, (40, 56, 3)).astype(np.float32)
    np.testing.assert_allclose(a(photo), b(photo), atol=2e-3)


@pytest.mark.slow
def test_adain_trains_with_a_style_per_image(folders, tmp_path):
    c = small_config(folders, tmp_path / "a", net="adain", kernel="bn", steps=20)
    assert trainer.run(c) == 0
    lines = metrics(tmp_path / "a")
    assert lines[-1]["loss"]["total"] < lines[0]["loss"]["total"], lines
    m = model_file.load(str(tmp_path / "a" / "model.msgpack"))
    assert m.net == "adain" and "encoder" in m.params
