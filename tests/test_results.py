"""Benchmark results: one timing loop (benchmarks/timing.py), one JSON writer with its metadata header
(benchmarks/results.py), and docs/results/ rendered from the recorded JSON only (benchmarks/report.py)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/ is not installed
from benchmarks import report, results, timing  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_clock(*ticks: float):
    it = iter(ticks)
    return lambda: next(it)


class TestTiming:
    def test_repeat_times_each_call_to_its_sync_after_untimed_warmups(self):
        calls, synced = [], []

        def fn():
            calls.append(len(calls))
            return calls[-1]

        # warm-up: 0 -> 5 (two calls); timed: 5 -> 7, 7 -> 11, 11 -> 14 (2, 4, 3 s).
        t = timing.repeat(fn, 3, warmup=2, per=2, sync=synced.append, clock=fake_clock(0, 5, 5, 7, 7, 11, 11, 14))
        assert calls == [0, 1, 2, 3, 4] and synced == [0, 1, 2, 3, 4]  # every call synced, warm-ups included
        assert t.seconds == (2, 4, 3) and t.warmup_s == 5 and t.per == 2
        assert t.median == 1.5 and t.best == 1.0  # per unit: 3 / 2, 2 / 2

    def test_repeat_without_warmup_and_bad_arguments(self):
        t = timing.repeat(lambda: None, 2, warmup=0, sync=timing.no_sync, clock=fake_clock(0, 1, 1, 4))
        assert t.seconds == (1, 3) and t.warmup_s == 0.0 and t.median == 2.0
        with pytest.raises(ValueError, match="per >= 1"):
            timing.repeat(lambda: None, 1, per=0)

    def test_once_returns_the_output_and_its_time(self):
        out, seconds = timing.once(lambda: "x", sync=timing.no_sync, clock=fake_clock(10.0, 10.25))
        assert (out, seconds) == ("x", 0.25)

    def test_ready_waits_for_jax_arrays_and_passes_anything_else(self):
        import jax.numpy as jnp

        tree = {"a": jnp.ones(3) * 2, "b": 1.5, "c": np.zeros(2)}
        assert timing.ready(tree) is not None and float(timing.ready(tree)["a"][0]) == 2.0
        assert timing.torch_sync("cpu") is timing.no_sync

    def test_interleave_takes_turns_within_each_round(self):
        order, rounds = [], []
        out = timing.interleave({"a": lambda: order.append("a") or len(order), "b": lambda: order.append("b") or 0},
                                3, lambda rnd, this: rounds.append((rnd, this)))
        assert order == ["a", "b"] * 3
        assert out == {"a": [1, 3, 5], "b": [0, 0, 0]}
        assert rounds == [(0, {"a": 1, "b": 0}), (1, {"a": 3, "b": 0}), (2, {"a": 5, "b": 0})]

    def test_median_of_is_the_median_over_rounds_of_each_rounds_median(self):
        rounds = [timing.Timing((4.0, 6.0, 100.0), per=2), timing.Timing((1.0,), per=2),
                  timing.Timing((10.0, 12.0), per=2)]
        assert timing.median_of(rounds) == 3.0  # medians per step 3, 0.5, 5.5


class TestResults:
    @pytest.mark.parametrize("platform,kind,cores,expected", [
        ("cpu", "cpu", 2, "cpu-2core"), ("gpu", "NVIDIA H200", 16, "gpu-nvidia-h200"),
        ("tpu", "TPU v4", 96, "tpu-v4"), ("gpu", "NVIDIA A100-SXM4-80GB", 8, "gpu-nvidia-a100-sxm4-80gb"),
    ])
    def test_machine_class(self, platform, kind, cores, expected):
        assert results.machine_class(platform, kind, cores) == expected

    def test_command_line_is_shell_quoted_and_runs_the_module(self):
        line = results.command_line("run", ["--sizes=256", "--out=my dir", "--methods=gram"])
        assert line == "python -m benchmarks.run --sizes=256 '--out=my dir' --methods=gram"
        assert shlex.split(line)[4] == "--out=my dir"

    def test_metadata_header(self, monkeypatch):
        monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_thunk_runtime=true")
        meta = results.metadata("memory", ["--sizes=64"])
        assert set(meta) == {"schema", "benchmark", "command", "date", "git", "machine", "versions", "env", "load"}
        assert meta["load"] == pytest.approx(os.getloadavg()[0], abs=5)
        assert meta["schema"] == results.SCHEMA and meta["benchmark"] == "memory"
        assert meta["command"] == "python -m benchmarks.memory --sizes=64"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["date"])
        assert re.fullmatch(r"[0-9a-f]{40}", meta["git"]["commit"]) and isinstance(meta["git"]["dirty"], bool)
        m = meta["machine"]
        assert set(m) == {"class", "cpu", "cores", "memory_bytes", "platform", "device_kind", "device_count", "os"}
        assert m["class"] == results.machine_class(m["platform"], m["device_kind"], m["cores"])
        assert m["cores"] >= 1 and m["device_count"] >= 1 and m["cpu"]
        assert {"python", "numpy", "jax", "jaxlib"} <= set(meta["versions"])
        assert meta["env"]["XLA_FLAGS"] == "--xla_cpu_use_thunk_runtime=true"
        json.dumps(meta)  # all plain JSON

    def test_git_state_outside_a_checkout(self, tmp_path):
        assert results.git_state(str(tmp_path)) == {"commit": None, "dirty": None}

    def test_write_to_out_and_to_the_record(self, tmp_path):
        doc = synthetic_doc()
        paths = results.write(doc, str(tmp_path / "out"), "preview_cost-16px", root=str(tmp_path / "rec"))
        assert paths == [str(tmp_path / "out" / "results.json"), str(tmp_path / "out" / "results.md"),
                         str(tmp_path / "rec" / "cpu-2core" / "preview_cost-16px.json")]
        assert json.loads((tmp_path / "rec" / "cpu-2core" / "preview_cost-16px.json").read_text()) == doc
        assert results.read(paths[0]) == doc
        assert (tmp_path / "out" / "results.md").read_text() == report.section(doc)
        assert results.write(doc) == []  # neither: nothing written

    def test_read_refuses_other_json(self, tmp_path):
        (tmp_path / "x.json").write_text('{"environment": {}, "results": []}')
        with pytest.raises(ValueError, match="not a benchmark results file"):
            results.read(str(tmp_path / "x.json"))

    @pytest.mark.parametrize("bias", [0.0, 0.1])
    def test_weights_record_of_a_pth(self, tmp_path, bias):
        torch = pytest.importorskip("torch")
        path = tmp_path / "w.pth"
        torch.save({"features.0.weight": torch.ones(2, 3, 3, 3), "features.0.bias": torch.full((2,), bias),
                    "classifier.0.bias": torch.ones(4)}, path)
        w = results.weights_record(str(path), "made here")
        assert w == {"file": "w.pth", "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "origin": "made here",
                     "pretrained": None, "random_init": bias == 0.0}

    def test_weights_record_of_an_nst_jax_file(self, random_weights):
        w = results.weights_record(random_weights)
        assert w["random_init"] is True and w["pretrained"] is None and len(w["sha256"]) == 64

    def test_a_benchmark_records_under_its_machine_class(self, tmp_path, monkeypatch, capsys):
        from benchmarks import preview_cost

        monkeypatch.setattr(results, "RESULTS_DIR", str(tmp_path))
        preview_cost.main(["--width=16", "--height=8", "--repeats=2", f"--out={tmp_path / 'out'}", "--record"])
        printed = capsys.readouterr().out
        (cls,) = [c for c in os.listdir(tmp_path) if c != "out"]
        doc = results.read(str(tmp_path / cls / "preview_cost.json"))
        assert doc == results.read(str(tmp_path / "out" / "results.json"))
        assert cls == doc["meta"]["machine"]["class"]
        assert doc["meta"]["command"] == ("python -m benchmarks.preview_cost --width=16 --height=8 --repeats=2 "
                                          f"--out={tmp_path / 'out'} --record")
        assert [r["what"] for r in doc["results"]][0] == "to_rgb (run thread)"
        assert all(0 < r["best_ms"] <= r["median_ms"] for r in doc["results"])
        assert printed == preview_cost.table(doc)

    @pytest.mark.parametrize("flag", ["--record=../x", "--record=a/b"])
    def test_record_names_are_plain(self, flag):
        from benchmarks import preview_cost

        with pytest.raises(SystemExit) as e:
            preview_cost.main([flag])
        assert e.value.code == 2


def synthetic_doc(cls: str = "cpu-2core", commit: str = "0123456789abcdef0123456789abcdef01234567",
                  best: float = 1.25) -> dict:
    """A preview_cost results document as the writer makes it, with fixed metadata."""
    return {
        "meta": {"schema": 1, "benchmark": "preview_cost",
                 "command": "python -m benchmarks.preview_cost --width=16 --height=8 --record",
                 "date": "2026-01-02T03:04:05Z", "git": {"commit": commit, "dirty": True},
                 "machine": {"class": cls, "cpu": "Test CPU", "cores": 2, "memory_bytes": 8 * 2**30,
                             "platform": "cpu", "device_kind": "cpu", "device_count": 1, "os": "Linux 6 x86_64"},
                 "versions": {"python": "3.11.7", "jax": "0.10.2"}, "env": {"XLA_FLAGS": "--a=b"}},
        "settings": {"width": 16, "height": 8, "repeats": 20,
                     "weights": {"file": "w.pth", "sha256": "ab" * 32, "origin": "w.pth (given)", "pretrained": None,
                                 "random_init": True}},
        "results": [{"what": "to_rgb (run thread)", "best_ms": best, "median_ms": 2.5}],
    }


EXPECTED_SECTION = """## benchmarks.preview_cost

What `--preview` costs a run, the figures the README's "Live preview" quotes.

- Date: 2026-01-02T03:04:05Z
- Commit: `0123456789ab` plus uncommitted changes
- Machine: Test CPU, 2 cores, 8 GiB memory; JAX devices: 1 x cpu (cpu); Linux 6 x86_64
- Versions: python 3.11.7, jax 0.10.2
- Environment: `XLA_FLAGS=--a=b`
- Weights: random weights (speed does not depend on them): `w.pth`, sha256 `abababababab`, from w.pth (given)
- Command:

  ```sh
  python -m benchmarks.preview_cost --width=16 --height=8 --record
  ```

16 x 8 px, 20 repeats

| what | best ms | median ms |
| --- | ---: | ---: |
| to_rgb (run thread) | 1.250 | 2.500 |
"""


class TestReport:
    def write_docs(self, root, *docs_by_name):
        for name, doc in docs_by_name:
            path = root / doc["meta"]["machine"]["class"] / f"{name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(doc))

    def test_section_is_the_header_then_the_benchmarks_table(self):
        assert report.section(synthetic_doc()) == EXPECTED_SECTION

    def test_weights_lines(self):
        pretrained = {"pretrained": "ImageNet VGG-19 (torchvision)", "random_init": False, "file": "v.pth"}
        assert report.weights_line(pretrained) == "pretrained, ImageNet VGG-19 (torchvision): `v.pth`"
        assert report.weights_line(results.INIT_PARAMS).startswith(report.RANDOM)

    def test_pages_and_index(self, tmp_path):
        self.write_docs(tmp_path / "res", ("preview_cost", synthetic_doc()),
                        ("preview_cost-big", synthetic_doc(best=0.5)),
                        ("preview_cost", synthetic_doc("gpu-nvidia-h200", "f" * 40)))
        pages = report.render(str(tmp_path / "res"))
        assert sorted(pages) == ["README.md", "cpu-2core.md", "gpu-nvidia-h200.md"]
        cpu = pages["cpu-2core.md"]
        assert cpu.startswith("# Benchmark results: cpu-2core\n\nGenerated by `python -m benchmarks.report` from "
                              "`benchmarks/results/cpu-2core/*.json`")
        assert ("Contents: [preview_cost](#benchmarkspreview_cost), "
                "[preview_cost-big](#benchmarkspreview_cost-preview_cost-big).\n") in cpu
        assert cpu.endswith("\n" + EXPECTED_SECTION.replace("## benchmarks.preview_cost\n",
                                                             "## benchmarks.preview_cost (preview_cost-big)\n")
                            .replace("| 1.250 |", "| 0.500 |"))
        assert "\n" + EXPECTED_SECTION + "\n## benchmarks.preview_cost (preview_cost-big)\n" in cpu
        index = pages["README.md"]
        assert ("| [cpu-2core](cpu-2core.md) | Test CPU, 2 cores, 1 x cpu | "
                "[preview_cost](cpu-2core.md#benchmarkspreview_cost) | 2026-01-02 | `0123456789ab+` |") in index
        assert "| [gpu-nvidia-h200](gpu-nvidia-h200.md) |" in index and index.count("\n| [") == 3
        assert report.render(str(tmp_path / "res")) == pages  # same JSON, same bytes

    def test_no_results_yet(self, tmp_path):
        assert report.render(str(tmp_path)) == {"README.md": report.index({})}
        assert "No results recorded yet." in report.index({})

    def test_write_then_check(self, tmp_path, capsys):
        self.write_docs(tmp_path / "res", ("preview_cost", synthetic_doc()))
        res, docs = f"--results={tmp_path / 'res'}", f"--docs={tmp_path / 'docs'}"
        assert report.main([res, docs, "--check"]) == 1  # nothing written yet
        assert report.main([res, docs]) == 0
        assert sorted(os.listdir(tmp_path / "docs")) == ["README.md", "cpu-2core.md"]
        assert report.main([res, docs, "--check"]) == 0
        (tmp_path / "docs" / "cpu-2core.md").write_text("hand-edited\n")
        (tmp_path / "docs" / "old-class.md").write_text("gone\n")
        capsys.readouterr()
        assert report.main([res, docs, "--check"]) == 1
        err = capsys.readouterr().err
        assert "cpu-2core.md (differs)" in err and "old-class.md (no results render to it)" in err

    def test_a_file_under_the_wrong_class_or_not_a_result_exits_2(self, tmp_path, capsys):
        doc = synthetic_doc()
        (tmp_path / "gpu-x").mkdir()
        (tmp_path / "gpu-x" / "run.json").write_text(json.dumps(doc))
        assert report.main([f"--results={tmp_path}", f"--docs={tmp_path / 'docs'}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and "filed under gpu-x" in err[0]
        (tmp_path / "gpu-x" / "run.json").write_text("{")
        assert report.main([f"--results={tmp_path}", f"--docs={tmp_path / 'docs'}"]) == 2


def test_committed_pages_are_what_the_committed_results_render_to():
    if not any(name.endswith(".json") for _, _, files in os.walk(results.RESULTS_DIR) for name in files):
        pytest.skip("no recorded results yet")
    assert report.stale(report.render(), report.DOCS_DIR) == [], "run: python -m benchmarks.report"


def test_committed_results_are_current_documents():
    paths = sorted(os.path.join(d, n) for d, _, files in os.walk(results.RESULTS_DIR) for n in files)
    if not paths:
        pytest.skip("no recorded results yet")
    for path in paths:
        assert path.endswith(".json"), path
        doc = results.read(path)
        assert os.path.basename(os.path.dirname(path)) == doc["meta"]["machine"]["class"]
        assert doc["meta"]["command"].startswith(f"python -m benchmarks.{doc['meta']['benchmark']} ")
        assert doc["meta"]["git"]["commit"], path


def test_readme_results_block_is_the_rendered_headline():
    from benchmarks import report, results

    with open(report.README, encoding="utf-8") as f:
        text = f.read()
    block = report.headline(report.load(results.RESULTS_DIR))
    assert report.readme_with(text, block) == text, "run: python -m benchmarks.report"
    assert "| gram |" in block or block == "No results recorded yet.\n"
    with pytest.raises(ValueError, match="markers"):
        report.readme_with("no markers here", block)
