"""--shard_image: one image's rows over several devices gives the single-device run's result.

The 8-device checks run tests/programs/shard_on_devices.py in a subprocess with 8 forced CPU devices (the device
count is fixed when JAX starts); the mesh of one and the refusals run here.
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_on_eight_devices

from configs import test as test_config
from nst_jax import config as cfg_lib
from nst_jax import losses, runner, weights
from nst_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAM = os.path.join(REPO, "tests", "programs", "shard_on_devices.py")
ENERGY_RTOL = 1e-5  # float32 rounding of sums split over devices, carried through a few Adam steps
W2_RTOL = 1e-3  # W2's eigendecompositions amplify that rounding of the covariance (README, Large images)


@pytest.fixture(scope="module")
def report(random_weights):
    out = run_on_eight_devices(PROGRAM, random_weights)
    print(f"\nsharded vs single: { {k: v for k, v in out.items() if not k.startswith('convs')} }")
    return out


@pytest.mark.slow
def test_every_method_equals_the_single_device_run(report):
    assert report["devices"] == 8
    run = report["all_methods"]
    # Each method's own style energy is a term of the fusion: every method, at every logged step and at the end.
    assert {f"style:{m}" for m in losses.METHODS} <= set(run["history_rel"])
    assert run["steps"] == [0, 1, 2, 3]  # every step, then the final energy
    for name, rel in [*run["history_rel"].items(), *run["final_rel"].items()]:
        assert rel <= (W2_RTOL if name in ("total", "style", "style:w2") else ENERGY_RTOL), (name, rel)
    assert run["max_diff_uint8"] <= 1, run  # the image within 1/255


@pytest.mark.slow
def test_lbfgs_state_with_a_history_axis(report):
    run = report["lbfgs"]
    assert run["max_diff_uint8"] <= 1 and max(run["final_rel"].values()) <= ENERGY_RTOL, run
    assert run["balance_rel"] <= ENERGY_RTOL  # the balance's gradient norms, computed sharded


@pytest.mark.parametrize("estimator", ["full", "unbiased", "rff"])
@pytest.mark.slow
def test_the_gaussians_other_estimators_equal_the_single_device_run(report, estimator):
    run = report[f"gaussian_{estimator}"]
    assert run["max_diff_uint8"] <= 1, run
    assert max(run["history_rel"].values()) <= ENERGY_RTOL and max(run["final_rel"].values()) <= ENERGY_RTOL, run


@pytest.mark.slow
def test_a_resumed_sharded_run_equals_the_uninterrupted_one(report):
    run = report["resume"]
    assert run["stopped_at"] == 2 and run["resumed_from"] == 2, run
    assert run["steps"][0] == 0 and run["steps"][-1] == 4, run  # the history carried over the checkpoint
    assert run["max_abs_diff"] == 0.0, run  # the same compiled steps from the same state: the same bits


@pytest.mark.slow
def test_height_not_divisible_by_the_devices_is_padded_to_whole_aligned_shares(report):
    # 35 rows: padded to 64 = 8 devices x 8 rows, 8 a multiple of 2**2 (relu3_1, the deepest layer, is after
    # two poolings), so every device's share stays whole down to the deepest layer.
    assert report["layout"] == {"rows": 35, "padded": 64, "devices": 8}
    assert report["all_methods"]["shard_image"] == {"devices": 8, "processes": 1, "rows": 35, "padded_rows": 64,
                                                    "rows_per_device": 8}
    assert report["state_shards"]["x"] == [[1, 8, 40, 3]] * 8  # a job axis of one, 8 of the 64 rows each
    assert report["state_shards"]["adam_mu"] == [[1, 8, 40, 3]] * 8


@pytest.mark.slow
def test_compiled_program_is_split_by_rows(report):
    single, sharded = report["convs_single"], report["convs_sharded"]
    assert len(single) == len(sharded) > 0
    assert {s[1] for s in single} >= {35}  # the whole image's rows at full resolution
    for _, rows, width, channels in sharded:
        level = round(math.log2(40 / width))  # the width is the whole image's at the conv's resolution
        assert rows == (64 // 8) >> level, (rows, width, channels)  # one device's share, not the whole
    # Per device, the largest convolution output is 1/8 of the padded whole (and under 1/4 of the unpadded).
    biggest = max(np.prod(s) for s in sharded)
    assert biggest * 8 == 64 * 40 * 64 and biggest * 4 < max(np.prod(s) for s in single)


@pytest.mark.slow
def test_a_mesh_of_one_device_gives_the_same_result(random_weights):
    loaded = weights.load(random_weights)
    rng = np.random.default_rng(1)
    content, style = rng.uniform(0, 1, (21, 32, 3)).astype(np.float32), rng.uniform(0, 1, (24, 24, 3)).astype(
        np.float32)
    results = []
    for sharded in (False, True):
        config = test_config.get_config()
        config.kernel, config.steps, config.init, config.shard_image = "linear,gaussian", 2, "noise", sharded
        config.balance = "none"  # the balance's sharded path is checked on 8 devices
        results.append(runner.stylize(content, style, config, weights=loaded))
    (a, rec_a), (b, rec_b) = results
    assert rec_b["shard_image"] == {"devices": 1, "processes": 1, "rows": 21, "padded_rows": 21, "rows_per_device": 21}
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(rec_a["losses"]["total"], rec_b["losses"]["total"], rtol=1e-6)


def test_strips_are_refused():
    config = test_config.get_config()
    config.shard_image, config.strips = True, 2
    with pytest.raises(ConfigError, match="--shard_image with --strips=2: not combined"):
        cfg_lib.check(config)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "nst_jax.main", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=300)


@pytest.mark.parametrize("args, message", [
    (["--shard_image", "--strips=2"], "--shard_image with --strips=2: not combined"),
    (["--shard_image", "--content_dir=.", "--output_dir=OUT"], "--shard_image: batch mode already spreads its jobs"),
    (["--multihost"], "--multihost: a single run joins other processes only to split its image"),
    (["--shard_image", "--multihost", "--preview"], "--preview: not with --multihost"),
    (["--shard_image", "--num_processes=2"], "--num_processes and --process_id need --multihost"),
    (["--output_dir=OUT"], "--output_dir is a batch-mode flag"),
])
@pytest.mark.slow
def test_impossible_combinations_exit_2_with_one_line(args, message, random_weights, tmp_path):
    args = [a.replace("OUT", str(tmp_path / "out")) for a in args]
    proc = run_cli(f"--config={REPO}/configs/test.py", f"--weights={random_weights}",
                   f"--output={tmp_path / 'x.png'}", *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_the_memory_and_time_benchmark_runs_and_its_rows_agree():
    # benchmarks/shard.py makes the README's table: a dry run at 32 px on 1 and 2 forced devices.
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "shard.py"), "--size=32", "--methods=gram",
                           "--devices=1,2", "--steps=1"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("| method | devices | rows per device | MB per device |")
    rows = json.loads(lines[-1])
    assert [(r["devices"], r["rows_per_device"]) for r in rows] == [(1, 32), (2, 16)]
    assert all(r["mb_per_device"] > r["temp_mb"] > 0 and r["s_per_step"] > 0 for r in rows)
    assert rows[1]["energy"] == pytest.approx(rows[0]["energy"], rel=1e-5)  # the same step, split or not
