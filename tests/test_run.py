"""End to end: configs/test.py on tiny demo images with a converted random VGG-19 (not pretrained weights)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import test as test_config
from nst_jax import cli, runner, weights

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ["gram", "linear", "poly", "gaussian", "bn", "linear+gaussian", "swd", "w2", "coral", "mkmmd", "w2,swd"]


@pytest.fixture(scope="module")
def loaded(random_weights):
    return weights.load(random_weights)


def make_config(random_weights, tmp_path, **overrides):
    c = test_config.get_config()
    c.weights = random_weights
    c.output = str(tmp_path / "out.png")
    for k, v in overrides.items():
        c[k] = v
    return c


@pytest.mark.parametrize("kernel", [k if k == "gram" else pytest.param(k, marks=pytest.mark.slow)
                                    for k in METHODS])
def test_every_method_lowers_the_energy_and_writes_outputs(kernel, random_weights, tmp_path):
    config = make_config(random_weights, tmp_path, kernel=kernel, steps=8)
    names = kernel.replace(",", "+").split("+")  # "+" spells a fusion; "," is read the same way
    if len(names) > 1:
        config.kernel_weights = "0.5,0.5"
    assert cli.run_one(config) == 0
    assert os.path.isfile(tmp_path / "out.png")
    record = json.loads((tmp_path / "out.json").read_text())
    total = record["losses"]["total"]
    # Every step logged (log_every 1), then the final step's energy: the history ends where the run ends.
    assert record["losses"]["step"] == list(range(9)) and total[-1] == record["final_losses"]["total"]
    assert record["final_losses"]["total"] < total[0]
    assert [t["method"] for t in record["terms"]] == names
    assert set(record["balance"]["factors"]) == set(names)
    assert record["weights"]["source"] == "torchvision" and len(record["weights"]["sha256"]) == 64
    assert record["compile_s"] > 0 and record["run_s"] > 0 and record["steps_run"] == 8
    assert record["config"]["kernel"] == kernel
    if len(names) > 1:
        assert all(f"style:{m}" in record["losses"] for m in names)
    assert not os.path.exists(tmp_path / "out.ckpt")  # removed once the run is complete
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@pytest.mark.slow
def test_same_seed_same_image_other_seed_other_image(loaded, random_weights, tmp_path):
    config = make_config(random_weights, tmp_path, kernel="gaussian", init="noise", steps=4)
    a, _ = runner.stylize(None, None, config, weights=loaded)
    b, _ = runner.stylize(None, None, config, weights=loaded)
    config.seed = 1
    c, _ = runner.stylize(None, None, config, weights=loaded)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["lbfgs", "sgd_paper"])
def test_other_optimizers_run_and_lower_the_energy(optimizer, loaded, random_weights, tmp_path):
    config = make_config(random_weights, tmp_path, kernel="gram", optimizer=optimizer, steps=6)
    result, record = runner.stylize(None, None, config, weights=loaded)
    assert record["steps_run"] == 6
    assert record["final_losses"]["total"] < record["losses"]["total"][0]
    assert result.shape == (24, 32, 3) and 0.0 <= result.min() and result.max() <= 1.0


@pytest.mark.slow
def test_sgd_paper_early_stop(loaded, random_weights, tmp_path):
    # A relative change below 100 % holds after the first step, so a tolerance of 1 stops there.
    config = make_config(random_weights, tmp_path, kernel="gram", optimizer="sgd_paper", steps=6)
    config.sgd.stop_tol = 1.0
    _, record = runner.stylize(None, None, config, weights=loaded)
    assert record["stopped_early"] and record["status"] == "stopped_early" and record["steps_run"] == 1
    assert record["losses"]["step"] == [0, 1]  # the step it ran, then the energy it stopped at


@pytest.mark.slow
def test_image_stays_in_range_with_a_large_step(loaded, random_weights, tmp_path):
    config = make_config(random_weights, tmp_path, kernel="gram", lr=5.0, steps=3)
    result, _ = runner.stylize(None, None, config, weights=loaded)
    assert result.min() >= 0.0 and result.max() <= 1.0


@pytest.mark.slow
def test_interrupted_run_resumes_bit_for_bit(loaded, random_weights, tmp_path):
    config = make_config(random_weights, tmp_path, kernel="gaussian", steps=8, checkpoint_every=2)
    full, _ = runner.stylize(None, None, config, weights=loaded)
    polls = []
    ckpt = str(tmp_path / "run.ckpt")
    with pytest.raises(runner.Interrupted):
        runner.stylize(None, None, config, weights=loaded, checkpoint_path=ckpt,
                       should_stop=lambda: polls.append(1) or len(polls) >= 2)
    assert os.path.isfile(ckpt)
    config.resume = True
    resumed, record = runner.stylize(None, None, config, weights=loaded, checkpoint_path=ckpt)
    assert record["resumed_from"] == 4  # two chunks of 2 steps ran before the stop
    assert np.array_equal(full, resumed)


def test_resume_refuses_a_checkpoint_of_another_run(loaded, random_weights, tmp_path):
    config = make_config(random_weights, tmp_path, kernel="gram", steps=6, checkpoint_every=3)
    ckpt = str(tmp_path / "run.ckpt")
    with pytest.raises(runner.Interrupted):
        runner.stylize(None, None, config, weights=loaded, checkpoint_path=ckpt, should_stop=lambda: True)
    config.resume = True
    config.style_weight = 2.0
    with pytest.raises(runner.UserError, match="other settings"):
        runner.stylize(None, None, config, weights=loaded, checkpoint_path=ckpt)


@pytest.mark.slow
def test_style_size_rules(loaded, random_weights, tmp_path):
    style = np.random.default_rng(0).uniform(size=(40, 20, 3)).astype(np.float32)
    content = np.random.default_rng(1).uniform(size=(30, 60, 3)).astype(np.float32)
    config = make_config(random_weights, tmp_path, steps=1)
    _, record = runner.stylize(content, style, config, weights=loaded)
    assert record["content"]["size"] == [16, 32] and record["style"]["size"] == [[32, 16]]
    config.style_resize = "match_content"
    _, record = runner.stylize(content, style, config, weights=loaded)
    assert record["style"]["size"] == [[16, 32]]
    config.style_resize = "keep_aspect"
    config.style_size = 24
    config.style_scale = 0.5
    _, record = runner.stylize(content, style, config, weights=loaded)
    assert record["style"]["size"] == [[12, 6]]


@pytest.mark.slow
def test_balance_makes_gradient_ratio_the_style_weight(loaded, random_weights, tmp_path):
    config = make_config(random_weights, tmp_path, kernel="bn", steps=1)
    _, auto = runner.stylize(None, None, config, weights=loaded)
    config.balance = "none"
    _, raw = runner.stylize(None, None, config, weights=loaded)
    assert raw["balance"]["factors"] == {"bn": 1.0}
    assert auto["balance"]["factors"]["bn"] > 0
    # The factor rescales the style energy only: the step-0 style term differs by exactly that factor.
    ratio = auto["losses"]["style"][0] / raw["losses"]["style"][0]
    assert ratio == pytest.approx(auto["balance"]["factors"]["bn"], rel=1e-4)


def run_cli(*args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "nst_jax.main", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=300)


@pytest.mark.slow
def test_cli_end_to_end(random_weights, tmp_path):
    out = tmp_path / "sub" / "cli.png"
    proc = run_cli(f"--config={REPO}/configs/test.py", f"--weights={random_weights}", f"--output={out}",
                   "--kernel=linear+bn", "--kernel_weights=0.3,0.7", "--steps=4", "--save_every=2", "--seed=3")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["config"]["seed"] == 3 and record["config"]["kernel_weights"] == "0.3,0.7"
    assert [t["weight"] for t in record["terms"]] == [0.3, 0.7]
    assert os.path.isfile(tmp_path / "sub" / "cli_00002.png")
    assert "it/s" in proc.stderr and "ETA" in proc.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--kernel=sobel"], "unknown method 'sobel'"),
        (["--kernel=linear+gaussian", "--kernel_weights=0.5"], "1 weight(s) for 2 method(s)"),
        (["--kernel=gram", "--kernel_weights=nan"], "finite and non-negative"),
        (["--steps=-1"], "--steps=-1"),
        (["--size=0"], "--size=0"),
        (["--style_weight=-1"], "--style_weight=-1"),
        (["--optimizer=rmsprop"], "--optimizer=rmsprop"),
        (["--steps=abc"], "--steps"),
        (["--config.no_such_field=1"], "--config"),
        (["--output=out.gif"], "unsupported extension"),
        (["--content=/no/such/photo.jpg"], "no such file"),
    ],
)
@pytest.mark.slow
def test_cli_user_errors_exit_2_with_one_line(args, message, random_weights, tmp_path):
    proc = run_cli(f"--config={REPO}/configs/test.py", f"--weights={random_weights}",
                   f"--output={tmp_path / 'x.png'}", *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert not os.path.exists(tmp_path / "x.png") and not os.path.exists(tmp_path / "x.json")


@pytest.mark.slow
def test_cli_missing_weights_names_the_command(tmp_path):
    proc = run_cli(f"--config={REPO}/configs/test.py", f"--output={tmp_path / 'x.png'}",
                   env_extra={"NST_JAX_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 2
    assert "python -m weights_converter" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_weights_are_described_by_the_hash_of_their_source_file(loaded):
    import dataclasses

    assert weights.describe(loaded).startswith("not a published pretrained file: torchvision")
    renamed = dataclasses.replace(loaded, origin="vgg19-dcbb9e9d.pth (sha256 0123abcd)")
    assert weights.describe(renamed).startswith("not a published pretrained file")
    real = dataclasses.replace(loaded, origin="vgg19-dcbb9e9d.pth (sha256 dcbb9e9d" + "0" * 56 + ")")
    assert weights.describe(real).startswith("ImageNet VGG-19 (torchvision IMAGENET1K_V1)")


@pytest.mark.parametrize("program, extra", [("nst_jax.main", ["content_dir", "output_dir", "multihost"]),
                                            ("nst_jax.compare", ["methods", "output_dir", "metrics"])])
@pytest.mark.slow
def test_help_exits_0_and_lists_every_flag_with_its_default(program, extra):
    proc = subprocess.run([sys.executable, "-m", program, "--help"], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = " ".join((proc.stdout + proc.stderr).split())
    names = [f.name for f in cli.RUN_FLAGS] if program == "nst_jax.main" else ["content", "style", "size", "steps",
                                                                               "weights", "seed"]
    for name in [*names, *extra]:
        assert f"--{name}:" in text or f"--[no]{name}:" in text, name
    assert "--steps: " in text and "[configs/default.py: 500 on a GPU/TPU, 200 on a CPU]" in text
    assert "[configs/default.py: 512 on a GPU/TPU, 256 on a CPU]" in text
