"""Batch mode (nst_jax.batch): the job list, stacked and sharded runs equal to single runs, resuming; VGG block
rematerialisation and bf16 compute.

The multi-device checks run in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``
(XLA reads it when JAX starts, and this pytest process already started JAX with one CPU device).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT, run_on_eight_devices
from PIL import Image

from configs import test as test_config
from nst_jax import batch, cli, image, outputs, vgg, weights


def write_images(folder, names, hw, seed) -> list[str]:
    """Random RGB PNGs of shape ``hw`` (deterministic per seed)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for name in names:
        path = os.path.join(folder, name)
        image.save_image(path, rng.uniform(size=(*hw, 3)).astype(np.float32))
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------------------
# The job list.


def test_jobs_are_contents_x_styles_x_methods_sorted(tmp_path):
    write_images(tmp_path / "in", ["b.png", "a.jpg", ".hidden.png"], (8, 8), 0)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    styles = write_images(tmp_path / "st", ["s1.png", "s2.png"], (8, 8), 1)
    jobs = batch.list_jobs(str(tmp_path / "in"), [styles[0], f"{styles[0]},{styles[1]}"],
                           ["gram", "linear,gaussian"], str(tmp_path / "out"))
    assert [j.name for j in jobs] == [
        "a__s1__gram", "a__s1__linear+gaussian", "a__s1+s2__gram", "a__s1+s2__linear+gaussian",
        "b__s1__gram", "b__s1__linear+gaussian", "b__s1+s2__gram", "b__s1+s2__linear+gaussian",
    ]
    assert jobs[3].style == f"{styles[0]},{styles[1]}" and jobs[3].kernel == "linear,gaussian"
    assert jobs[0].output == str(tmp_path / "out" / "a__s1__gram.png")
    assert batch.alternatives(" gram; bn;;linear,gaussian ") == ["gram", "bn", "linear,gaussian"]


@pytest.mark.parametrize("n_jobs,count", [(8, 1), (8, 2), (7, 3), (2, 4), (0, 2)])
def test_process_shares_are_disjoint_and_complete(n_jobs, count):
    jobs = [batch.Job(f"c{i}.png", "s.png", "gram", f"o{i}.png") for i in range(n_jobs)]
    shares = [[job for _, job in batch.process_share(jobs, p, count)] for p in range(count)]
    flat = [j for share in shares for j in share]
    assert sorted(flat, key=jobs.index) == jobs and len(flat) == len(set(flat))
    assert all(jobs.index(j) % count == p for p, share in enumerate(shares) for j in share)
    with pytest.raises(ValueError):
        batch.process_share(jobs, count, count)


def test_complete_means_image_and_parsable_record(tmp_path):
    job = batch.Job("c.png", "s.png", "gram", str(tmp_path / "c__s__gram.png"))
    assert not batch.is_complete(job)
    write_images(tmp_path, ["c__s__gram.png"], (8, 8), 0)
    assert not batch.is_complete(job)  # image without record: interrupted between the two writes
    (tmp_path / "c__s__gram.json").write_text('{"steps_run": 3')
    assert not batch.is_complete(job)  # truncated record
    (tmp_path / "c__s__gram.json").write_text('{"steps_run": 3}')
    assert batch.is_complete(job)
    os.remove(tmp_path / "c__s__gram.png")
    assert not batch.is_complete(job)


@pytest.mark.parametrize("case,message", [
    ("empty_dir", "no images"),
    ("missing_dir", "not a folder"),
    ("missing_style", "no such file"),
    ("no_style", "needs --style"),
    ("same_dirs", "must differ from --content_dir"),
    ("duplicate_names", "two jobs would both write"),
    ("bad_dtype", "--dtype=float16"),
    ("bad_kernel", "unknown method 'gramm'"),
    ("ids_without_multihost", "need --multihost"),
])
def test_user_errors_are_one_line_exit_2(case, message, tmp_path, capsys):
    content_dir, out = str(tmp_path / "in"), str(tmp_path / "out")
    write_images(content_dir, ["a.png", "b.png"], (16, 16), 0)
    (style,) = write_images(tmp_path, ["s.png"], (16, 16), 1)
    config = test_config.get_config()
    config.style, config.kernel = style, "gram"
    kwargs = {}
    if case == "empty_dir":
        content_dir = str(tmp_path / "empty")
        os.makedirs(content_dir)
    elif case == "missing_dir":
        content_dir = str(tmp_path / "nowhere")
    elif case == "missing_style":
        config.style = f"{style};{tmp_path}/nope.png"
    elif case == "no_style":
        config.style = ""
    elif case == "same_dirs":
        out = content_dir
    elif case == "duplicate_names":
        write_images(content_dir, ["a.jpg"], (16, 16), 2)
    elif case == "bad_dtype":
        config.dtype = "float16"
    elif case == "bad_kernel":
        config.kernel = "gram;gramm"
    elif case == "ids_without_multihost":
        kwargs["process_id"] = 1
    with pytest.raises(SystemExit) as exit_info:
        cli.run_batch(config, content_dir=content_dir, output_dir=out, **kwargs)
    assert exit_info.value.code == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    if case != "same_dirs":
        assert not os.path.exists(out) or not os.listdir(out)


# ---------------------------------------------------------------------------------------------------------
# Resuming: an interrupted batch, rerun, runs only the jobs that are missing.


def test_interrupted_batch_reruns_only_missing_jobs(random_weights, tmp_path):
    content_dir = str(tmp_path / "in")
    write_images(content_dir, ["a.png", "b.png", "c.png", "d.png"], (24, 32), 0)
    (style,) = write_images(tmp_path, ["s.png"], (32, 32), 1)
    config = test_config.get_config()
    config.weights, config.style, config.kernel, config.steps = random_weights, style, "gram", 4
    out = str(tmp_path / "out")
    jobs = batch.list_jobs(content_dir, [style], ["gram"], out)
    loaded = weights.load(random_weights)

    # "Killed" once the first job's outputs are on disk: the round in flight is abandoned.
    def stop():
        return batch.is_complete(jobs[0])

    logs: list[str] = []
    first = batch.run_jobs(config, jobs, weights=loaded, should_stop=stop, log=logs.append)
    assert first.interrupted and first.written == ["a__s__gram"]
    assert [j.name for j in jobs if batch.is_complete(j)] == ["a__s__gram"]
    # A job interrupted between its image and its record, and one whose record is damaged, are not complete.
    image.save_image(jobs[1].output, np.zeros((24, 32, 3), np.float32))
    write_images(out, ["c__s__gram.png"], (24, 32), 3)
    with open(outputs.record_path(jobs[2].output), "w") as f:
        f.write("{")
    done_mtime = os.stat(jobs[0].output).st_mtime_ns, os.stat(outputs.record_path(jobs[0].output)).st_mtime_ns

    logs.clear()
    second = batch.run_jobs(config, jobs, weights=loaded, log=logs.append)
    assert not second.interrupted
    assert second.skipped == ["a__s__gram"]
    assert second.written == ["b__s__gram", "c__s__gram", "d__s__gram"]
    assert "1 already complete (skipped), 3 to run" in logs[0]
    assert (os.stat(jobs[0].output).st_mtime_ns, os.stat(outputs.record_path(jobs[0].output)).st_mtime_ns) == done_mtime
    assert all(batch.is_complete(j) for j in jobs)
    record = json.loads(open(outputs.record_path(jobs[1].output)).read())
    assert record["steps_run"] == 4 and record["output"] == os.path.abspath(jobs[1].output)
    assert record["config"]["content"] == jobs[1].content and record["batch"]["process_count"] == 1
    assert record["final_losses"]["total"] < record["losses"]["total"][0]
    assert np.asarray(Image.open(jobs[1].output)).std() > 0  # the zero image was replaced

    third = batch.run_jobs(config, jobs, weights=loaded, log=logs.append)
    assert third.written == [] and len(third.skipped) == 4


# ---------------------------------------------------------------------------------------------------------
# Stacked and sharded over 8 devices: the same images as single runs.

DEVICES_PROGRAM = os.path.join(REPO_ROOT, "tests", "programs", "batch_on_devices.py")


@pytest.fixture(scope="module")
def device_report(random_weights, tmp_path_factory):
    root = tmp_path_factory.mktemp("devices")
    write_images(root / "in", ["a.png", "b.png", "c.png", "d.png"], (24, 32), 0)
    style_a, style_b = write_images(root, ["sa.png", "sb.png"], (40, 30), 1)
    report = run_on_eight_devices(DEVICES_PROGRAM, random_weights, str(root / "in"), style_a, style_b,
                                  str(root / "out"), timeout=600)
    print(f"\nstacked vs single runs: {report}")
    return report


@pytest.mark.slow
def test_eight_jobs_on_eight_devices_equal_single_runs(device_report):
    # Bit for bit after 120 steps: the image, the final energy and every logged loss.
    assert device_report["devices"] == 8
    eight = device_report["eight_on_eight"]
    assert len(eight["written"]) == 8 and eight["padded_to"] == [8] * 8 and eight["steps"] == [120] * 8
    assert eight["max_diff_uint8"] == [0] * 8, eight
    assert all(eight["final_energy_equal"]) and all(eight["history_equal"]), eight


@pytest.mark.slow
def test_job_count_not_dividing_the_devices(device_report):
    five = device_report["five_on_eight"]
    assert len(five["written"]) == 5 and five["padded_to"] == [8] * 5
    assert five["max_diff_uint8"] == [0] * 5, five
    assert all(five["final_energy_equal"]) and all(five["history_equal"]), five


# ---------------------------------------------------------------------------------------------------------
# VGG-19 block rematerialisation and bf16 compute.

LAYERS = ("relu1_1", "relu2_1", "relu2_2", "pool2", "relu3_1")


def _gram_energy(params, x, remat, dtype):
    feats = vgg.extract(params, x, LAYERS, remat=remat, dtype=dtype)
    total = 0.0
    for f in feats.values():
        m = f.reshape(-1, f.shape[-1])
        total = total + jnp.sum((m.T @ m) ** 2) / m.shape[0] ** 2
    return total


@pytest.fixture(scope="module")
def small_input():
    return jnp.asarray(np.random.default_rng(0).standard_normal((1, 20, 28, 3)).astype(np.float32))


@pytest.mark.slow
def test_remat_same_features_gradient_and_parameter_tree(random_params, small_input):
    plain = vgg.extract(random_params, small_input, LAYERS)
    remat = vgg.extract(random_params, small_input, LAYERS, remat=True)
    for name in LAYERS:
        np.testing.assert_allclose(remat[name], plain[name], rtol=1e-6, atol=1e-6)
    g_plain = jax.grad(_gram_energy, 1)(random_params, small_input, False, jnp.float32)
    g_remat = jax.grad(_gram_energy, 1)(random_params, small_input, True, jnp.float32)
    np.testing.assert_allclose(g_remat, g_plain, rtol=1e-5, atol=1e-6 * float(jnp.abs(g_plain).max()))
    # The remat program really recomputes: its backward pass holds a checkpoint per block.
    jaxpr = str(jax.make_jaxpr(jax.grad(_gram_energy, 1), static_argnums=(2, 3))(
        random_params, small_input, True, jnp.float32))
    assert jaxpr.count("remat") + jaxpr.count("checkpoint") >= 3
    model = vgg.VGG19(layers=("relu5_4",), remat=True)
    tree = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    assert jax.tree.map(lambda s: s.shape, tree) == jax.tree.map(lambda s: s.shape, vgg.param_shapes())


@pytest.mark.slow
def test_bfloat16_compute_float32_outputs_and_parameters(random_params, small_input):
    plain = vgg.extract(random_params, small_input, LAYERS)
    half = vgg.extract(random_params, small_input, LAYERS, dtype=jnp.bfloat16)
    for name in LAYERS:
        assert half[name].dtype == jnp.float32
        err = float(jnp.abs(half[name] - plain[name]).max() / jnp.abs(plain[name]).max())
        assert 0 < err < 3e-2, (name, err)  # rounded (so bf16 was used), but close
    model = vgg.VGG19(layers=("relu1_1",), dtype=jnp.bfloat16)
    tree = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(tree))
    g = jax.grad(_gram_energy, 1)(random_params, small_input, True, jnp.bfloat16)
    assert g.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g)))


@pytest.mark.slow
def test_the_alignment_methods_run_in_batch_mode(random_weights, tmp_path):
    content_dir = str(tmp_path / "in")
    write_images(content_dir, ["a.png", "b.png"], (24, 32), 4)
    (style,) = write_images(tmp_path, ["s.png"], (32, 32), 5)
    config = test_config.get_config()
    config.weights, config.steps = random_weights, 3
    kernels = ["swd", "w2", "coral", "mkmmd", "w2,swd"]
    jobs = batch.list_jobs(content_dir, [style], kernels, str(tmp_path / "out"))
    summary = batch.run_jobs(config, jobs, weights=weights.load(random_weights), log=lambda m: None)
    assert sorted(summary.written) == sorted(j.name for j in jobs) and len(jobs) == 10
    for job in jobs:
        record = json.loads(open(outputs.record_path(job.output)).read())
        assert record["status"] == "done" and record["batch"]["round_jobs"] == 1
        assert record["final_losses"]["total"] < record["losses"]["total"][0], job.name
