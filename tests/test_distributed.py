"""Multi-host batch mode: two processes on 127.0.0.1 (jax.distributed, CPU) split one batch through the CLI.

Each process runs ``python -m nst_jax.main --content_dir=... --multihost --coordinator_address=127.0.0.1:PORT
--num_processes=2 --process_id=I`` with two local CPU devices, as each worker of a pod slice would (there the
three values come from the environment). Together they must write every job once: no overlap, none dropped.
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

CONFIG = os.path.join(REPO_ROOT, "configs", "test.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "nst_jax.main", f"--config={CONFIG}", f"--weights={random_weights}",
             f"--content_dir={root / 'in'}", f"--style={root / 's.png'}", "--kernel=gram;bn", "--steps=3",
             f"--output_dir={out}", "--multihost", f"--coordinator_address=127.0.0.1:{port}",
             "--num_processes=2", f"--process_id={pid}"],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for pid in range(2)
    ]
    results = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append((p.returncode, err))
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
