"""What a run tells its user is what it did: the bar's losses, resumed runs, scales, summaries, batch and API
progress, the machine's defaults. configs/test.py on tiny demo images with random weights."""

from __future__ import annotations

import io
import json
import os

import pytest

from configs import test as test_config
from nst_jax import batch, image, report, runner, weights
from nst_jax import config as config_lib


@pytest.fixture(scope="module")
def loaded(random_weights):
    return weights.load(random_weights)


def make_config(random_weights, **overrides):
    c = test_config.get_config()
    c.weights = random_weights
    for k, v in overrides.items():
        c[k] = v
    return c


def test_bar_shows_the_losses_of_the_step_it_reports(loaded, random_weights):
    config = make_config(random_weights, kernel="gram", steps=8)  # chunks of 2 steps, every step logged
    seen = []
    _, record = runner.stylize(None, None, config, weights=loaded, progress=seen.append)
    assert [p.step for p in seen] == [2, 4, 6, 8] and all(p.steps == 8 for p in seen)
    # The energy at a chunk's last image with that step's key is what the next step reports for it.
    history = dict(zip(record["losses"]["step"], record["losses"]["total"], strict=True))
    for p in seen:
        assert p.losses["total"] == pytest.approx(history[p.step], rel=1e-5), p.step
    assert seen[-1].losses == record["final_losses"]
    line = report.line(seen[-1])
    assert "8/8" in line and f"total {record['final_losses']['total']:.4g}" in line


def test_resumed_run_reports_this_process_and_the_whole_run(loaded, random_weights, tmp_path):
    config = make_config(random_weights, kernel="gram", steps=8, checkpoint_every=2)
    ckpt = str(tmp_path / "run.ckpt")
    polls = []
    with pytest.raises(runner.Interrupted) as stopped:
        runner.stylize(None, None, config, weights=loaded, checkpoint_path=ckpt,
                       should_stop=lambda: polls.append(1) or len(polls) >= 2)
    first_s = stopped.value.record["run_s"]
    config.resume = True
    seen = []
    _, record = runner.stylize(None, None, config, weights=loaded, checkpoint_path=ckpt, progress=seen.append)
    assert record["resumed_from"] == 4 and record["steps_this_process"] == 4 and record["steps_run"] == 8
    assert record["run_s_whole"] == pytest.approx(record["run_s_before"] + record["run_s"])
    assert 0 < record["run_s_before"] <= first_s + 1e-6
    assert record["iterations_per_s"] == pytest.approx(4 / record["run_s"])
    assert record["losses"]["step"] == list(range(9))  # the history read back, continued, ended at step 8
    assert [p.step for p in seen] == [6, 8] and seen[0].start_step == 4
    assert "6/8 (resumed from 4)" in report.line(seen[0])
    text = report.summary(record)
    assert text.startswith("4 steps in ") and "resumed from step 4: the run did 8 steps" in text, text


def test_scales_are_labelled_counted_and_kept(loaded, random_weights):
    config = make_config(random_weights, kernel="gram", steps=4, scales=2)
    stream = io.StringIO()
    _, record = runner.stylize(None, None, config, weights=loaded, progress=report.ProgressBar(stream=stream))
    sizes = [s["size"] for s in record["scales"]]
    assert sizes[1][0] == 2 * sizes[0][0] or abs(sizes[1][0] - 2 * sizes[0][0]) <= 1
    lines = stream.getvalue().splitlines()
    for k, (h, w) in enumerate(sizes):
        assert any(line.startswith(f"scale {k + 1}/2, {w}x{h} [") and "4/4" in line for line in lines), lines
    for s in record["scales"]:
        assert s["steps_this_process"] == 4 and s["losses"]["step"][-1] == 4
        assert s["losses"]["total"][-1] == s["final_losses"]["total"]
    # The record's top level counts the whole run, as the last line does.
    assert record["steps_run"] == record["steps_this_process"] == 8
    for key in ("run_s", "compile_s", "setup_s", "run_s_whole"):
        assert record[key] == pytest.approx(sum(s[key] for s in record["scales"])), key
    assert record["iterations_per_s"] == pytest.approx(8 / record["run_s"])
    text = report.summary(record)
    assert text.startswith(f"2 scales ({sizes[0][1]}x{sizes[0][0]}, {sizes[1][1]}x{sizes[1][0]}): 8 steps in "
                           f"{record['run_s']:.1f} s after {record['compile_s']:.1f} s compile"), text


@pytest.mark.slow
def test_api_progress_true_prints_a_bar_and_is_silent_by_default(loaded, random_weights, capsys):
    config = make_config(random_weights, kernel="gram", steps=2)
    runner.stylize(None, None, config, weights=loaded)
    assert capsys.readouterr().err == ""
    runner.stylize(None, None, config, weights=loaded, progress=True)
    assert "2/2" in capsys.readouterr().err


def test_batch_reports_progress_per_round(loaded, random_weights, tmp_path):
    content_dir = tmp_path / "in"
    content_dir.mkdir()
    rgb = image.resize(runner._input(None, "content")[0], (24, 32))
    for name in ("a.png", "b.png"):
        image.save_image(str(content_dir / name), rgb)
    style = str(tmp_path / "s.png")
    image.save_image(style, rgb[::-1])
    config = make_config(random_weights, steps=4)
    jobs = batch.list_jobs(str(content_dir), [style], ["gram"], str(tmp_path / "out"))
    seen = []
    batch.run_jobs(config, jobs, weights=loaded, log=lambda m: None, progress=seen.append)
    assert [(p.label, p.step) for p in seen] == [("round 1/2: a__s__gram", 2), ("round 1/2: a__s__gram", 4),
                                                 ("round 2/2: b__s__gram", 2), ("round 2/2: b__s__gram", 4)]
    record = json.loads(open(os.path.join(tmp_path, "out", "b__s__gram.json")).read())
    assert seen[-1].losses == record["final_losses"]


def test_cpu_default_steps_are_said_and_explicit_steps_are_kept(random_weights):
    import jax

    config = make_config(random_weights)
    config.steps = None
    config_lib.check(config)  # unset is valid: the machine's default
    steps, note = config_lib.default_steps(config)
    if jax.default_backend() == "cpu":
        assert steps == config_lib.CPU_DEFAULT_STEPS == 200 and "--steps=200" in note
        assert note in config_lib.machine_notes(config)
    assert config_lib.with_default_steps(config).steps == steps and config.steps is None
    config.steps = 7
    assert config_lib.default_steps(config) == (7, None) and config_lib.with_default_steps(config) is config


@pytest.mark.slow
def test_unbiased_estimates_are_marked_and_explained(loaded, random_weights):
    """The Gaussian's paired estimator can be negative: the bar marks its terms, the record and summary say so;
    exact methods carry no such note."""
    seen = []
    _, record = runner.stylize(None, None, make_config(random_weights, kernel="gram+gaussian", steps=2),
                               weights=loaded, progress=seen.append)
    assert seen[-1].estimates == ("total", "style", "style:gaussian")
    text = report.line(seen[-1])
    assert "total~ " in text and "style~ " in text and "content~" not in text, text
    (note,) = record["notes"]
    assert note.startswith("style method gaussian (") and "unbiased estimate of MMD^2" in note
    assert "can be negative" in report.summary(record)
    _, exact = runner.stylize(None, None, make_config(random_weights, kernel="gram", steps=2), weights=loaded)
    assert exact["notes"] == [] and "negative" not in report.summary(exact)
    config = make_config(random_weights, kernel="gaussian", steps=2)
    config.gaussian_estimator = "full"  # the V-statistic is never negative
    seen.clear()
    runner.stylize(None, None, config, weights=loaded, progress=seen.append)
    assert seen[-1].estimates == ()
