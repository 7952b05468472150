"""Multi-host batch mode: two processes on 127.0.0.1 (jax.distributed, CPU) split one batch through the CLI.

Each process runs ``python -m nst_jax.main --content_dir=... --multihost --coordinator_address=127.0.0.1:PORT
--num_processes=2 --process_id=I`` with two local CPU devices, as each worker of a pod slice would (there the
three values come from the environment). Together they must write every job once: no overlap, none dropped.
And one image over both processes' devices (``--shard_image --multihost``, as over a TPU slice): the one-device
run's result, written by process 0 only; ``--resume`` refused on every process when one lacks its checkpoint.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT

from nst_jax import batch, image, outputs

# Every test starts two processes of python -m nst_jax.main: all of them are slow.
pytestmark = pytest.mark.slow

CONFIG = os.path.join(REPO_ROOT, "configs", "test.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[list[str]], env: dict[str, str]) -> list[tuple[int, str]]:
    """Starts one process per argument list at once and waits for all: (exit status, stderr) each."""
    procs = [subprocess.Popen([sys.executable, "-m", "nst_jax.main", *a], cwd=REPO_ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for a in args]
    results = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append((p.returncode, err))
    return results


@pytest.fixture(scope="module")
def two_hosts(random_weights, tmp_path_factory):
    root = tmp_path_factory.mktemp("multihost")
    rng = np.random.default_rng(0)
    os.makedirs(root / "in")
    for name in ("a", "b", "c"):
        image.save_image(str(root / "in" / f"{name}.png"), rng.uniform(size=(24, 32, 3)).astype(np.float32))
    image.save_image(str(root / "s.png"), rng.uniform(size=(32, 32, 3)).astype(np.float32))
    out = root / "out"
    port = free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    results = launch([[f"--config={CONFIG}", f"--weights={random_weights}", f"--content_dir={root / 'in'}",
                       f"--style={root / 's.png'}", "--kernel=gram;bn", "--steps=3", f"--output_dir={out}",
                       "--multihost", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                       f"--process_id={pid}"] for pid in range(2)], env)
    jobs = batch.list_jobs(str(root / "in"), [str(root / "s.png")], ["gram", "bn"], str(out))
    return jobs, results


def written_by(stderr: str) -> set[str]:
    return {os.path.splitext(os.path.basename(line.split()[1]))[0] for line in stderr.splitlines()
            if line.startswith("wrote ")}


def test_two_processes_split_the_batch_without_overlap_or_loss(two_hosts):
    jobs, results = two_hosts
    for code, err in results:
        assert code == 0, err[-3000:]
    shares = [written_by(err) for _, err in results]
    print(f"\nprocess 0 wrote {sorted(shares[0])}\nprocess 1 wrote {sorted(shares[1])}")
    assert not shares[0] & shares[1]
    assert shares[0] | shares[1] == {j.name for j in jobs} and len(jobs) == 6
    for i, job in enumerate(jobs):
        assert job.name in shares[i % 2]
        assert batch.is_complete(job)
        record = json.loads(open(outputs.record_path(job.output)).read())
        assert record["batch"]["process_index"] == i % 2 and record["batch"]["process_count"] == 2
        assert record["batch"]["local_devices"] == 2 and record["device"]["count"] == 4  # 2 hosts x 2
    for pid, (_, err) in enumerate(results):
        assert f"process {pid} of 2: 3 of 6 jobs, 0 already complete (skipped), 3 to run on 2 cpu device(s)" in err


@pytest.fixture(scope="module")
def one_image_over_two_hosts(random_weights, tmp_path_factory):
    """One 35 x 40 image (35 rows: not a multiple of 4) split by rows over 2 processes x 2 CPU devices, and the
    same run on one device."""
    root = tmp_path_factory.mktemp("slice")
    rng = np.random.default_rng(3)
    image.save_image(str(root / "c.png"), rng.uniform(size=(35, 40, 3)).astype(np.float32))
    image.save_image(str(root / "s.png"), rng.uniform(size=(32, 32, 3)).astype(np.float32))
    common = [f"--config={CONFIG}", f"--weights={random_weights}", f"--content={root / 'c.png'}",
              f"--style={root / 's.png'}", "--kernel=gram+gaussian", "--size=40", "--steps=4", "--init=noise"]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    port = free_port()
    split = launch([[*common, f"--output={root / f'p{pid}' / 'out.png'}", "--shard_image", "--multihost",
                     f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={pid}"]
                    for pid in range(2)], env)
    (single,) = launch([[*common, f"--output={root / 'single' / 'out.png'}"]],
                       {**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
    return root, split, single


def test_one_image_over_every_device_of_two_processes_equals_the_single_device_run(one_image_over_two_hosts):
    root, split, single = one_image_over_two_hosts
    for code, err in [*split, single]:
        assert code == 0, err[-3000:]
    # Process 0 prints and writes the image and record; process 1 writes nothing but its checkpoints.
    assert f"wrote {root / 'p0' / 'out.png'}" in split[0][1]
    assert "wrote" not in split[1][1] and not (root / "p1" / "out.png").exists()
    record = json.loads((root / "p0" / "out.json").read_text())
    assert record["shard_image"] == {"devices": 4, "processes": 2, "rows": 35, "padded_rows": 48,
                                     "rows_per_device": 12}
    expected = json.loads((root / "single" / "out.json").read_text())
    for term, value in expected["final_losses"].items():
        assert record["final_losses"][term] == pytest.approx(value, rel=1e-5, abs=1e-6), term
    a = image.load_image(str(root / "p0" / "out.png")).astype(np.float32)
    b = image.load_image(str(root / "single" / "out.png")).astype(np.float32)
    rel = abs(record["final_losses"]["total"] - expected["final_losses"]["total"]) / expected["final_losses"]["total"]
    print(f"\n2 processes x 2 devices vs 1 device: image max diff {np.abs(a - b).max() * 255:.2g} levels, final "
          f"energy rel. diff {rel:.2g}")
    assert np.abs(a - b).max() * 255 <= 1.0 + 1e-3  # the 8-bit images within one level


def test_resume_over_two_processes_needs_every_process_checkpoint(random_weights, tmp_path):
    # Process 0 has a checkpoint file, process 1 none: both refuse in one line before any step (a process that
    # started afresh would wait forever for the others).
    (tmp_path / "p0").mkdir()
    (tmp_path / "p0" / "out.ckpt").write_bytes(b"placeholder")
    port = free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}
    results = launch([[f"--config={CONFIG}", f"--weights={random_weights}",
                       f"--output={tmp_path / f'p{pid}' / 'out.png'}", "--shard_image", "--resume", "--multihost",
                       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={pid}"]
                      for pid in range(2)], env)
    for pid, (code, err) in enumerate(results):
        lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
        here = tmp_path / f"p{pid}" / "out.ckpt"
        assert code == 2 and lines == [f"error: --resume: process(es) 1 have no checkpoint of --output (here {here}); "
                                       f"every process needs its own copy (each writes one)"], err[-2000:]
    assert not (tmp_path / "p1").exists()
