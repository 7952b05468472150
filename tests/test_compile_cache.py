"""The command line's persistent compilation cache (nst_jax.compile_cache): where it goes, how it is turned
off, bad folders, and a second process of the same shapes loading what the first compiled."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nst_jax import compile_cache
from nst_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("NST_JAX_CACHE", compile_cache.ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path


def test_default_is_under_the_project_cache_folder(clean_env, monkeypatch):
    assert compile_cache.resolve(None) == (str(clean_env / "xdg" / "nst_jax" / "xla"), False)
    monkeypatch.setenv("NST_JAX_CACHE", str(clean_env / "mine"))
    assert compile_cache.resolve(None) == (str(clean_env / "mine" / "xla"), False)


def test_flag_beats_environment_and_off_turns_it_off(clean_env, monkeypatch):
    monkeypatch.setenv(compile_cache.ENV, str(clean_env / "env"))
    assert compile_cache.resolve(None) == (str(clean_env / "env"), True)
    assert compile_cache.resolve(str(clean_env / "flag")) == (str(clean_env / "flag"), True)
    assert compile_cache.resolve("off") == (None, True)
    monkeypatch.setenv(compile_cache.ENV, "OFF")
    assert compile_cache.resolve(None) == (None, True)
    assert compile_cache.enable(None) is None


def test_unusable_folder_is_an_error_when_named_and_a_warning_by_default(clean_env, monkeypatch, capsys):
    blocker = clean_env / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="compilation cache .*--compile_cache=off"):
        compile_cache.enable(str(blocker / "xla"))
    monkeypatch.setenv("NST_JAX_CACHE", str(blocker))  # the default folder would be a_file/xla
    assert compile_cache.enable(None) is None
    assert "warning: compilation cache off" in capsys.readouterr().err


def _main(tmp_path, name, *extra, env=None):
    out = tmp_path / f"{name}.png"
    steps = [] if any(a.startswith("--steps=") for a in extra) else ["--steps=2"]
    proc = subprocess.run(
        [sys.executable, "-m", "nst_jax.main", f"--config={REPO}/configs/test.py", f"--output={out}",
         *steps, "--balance=none", *extra],
        capture_output=True, text=True, cwd=REPO, timeout=300, env={**os.environ, **(env or {})})
    return proc, out


@pytest.mark.slow
def test_second_run_of_the_same_shapes_loads_instead_of_compiling(random_weights, tmp_path):
    cache = tmp_path / "cache"
    first, out1 = _main(tmp_path, "first", f"--weights={random_weights}", f"--compile_cache={cache}")
    assert first.returncode == 0, first.stderr
    entries = os.listdir(cache)
    assert any(e.startswith("jit_chunk") for e in entries), entries  # the step loop is stored
    # JAX logs each persistent-cache lookup at debug level for the modules named here.
    second, out2 = _main(tmp_path, "second", f"--weights={random_weights}", f"--compile_cache={cache}",
                         env={"JAX_DEBUG_LOG_MODULES": "jax._src.compiler"})
    assert second.returncode == 0, second.stderr
    assert "cache hit for 'jit_chunk'" in second.stderr and "CACHE MISS for 'jit_chunk'" not in second.stderr
    t1 = json.loads(out1.with_suffix(".json").read_text())["compile_s"]
    t2 = json.loads(out2.with_suffix(".json").read_text())["compile_s"]
    assert t2 < t1, (t1, t2)  # tracing and lowering remain; XLA's compilation does not
    assert out1.read_bytes() == out2.read_bytes()  # the loaded program computes the same image
    assert sorted(os.listdir(cache)) == sorted(entries)  # nothing new to store
    # The programs do not depend on the run's step count (only on the chunk): 3 steps load the 2-step run's.
    third, _ = _main(tmp_path, "third", f"--weights={random_weights}", f"--compile_cache={cache}", "--steps=3",
                     env={"JAX_DEBUG_LOG_MODULES": "jax._src.compiler"})
    assert third.returncode == 0, third.stderr
    assert "cache hit for 'jit_chunk'" in third.stderr and "CACHE MISS for 'jit_chunk'" not in third.stderr
    assert sorted(os.listdir(cache)) == sorted(entries)


@pytest.mark.slow
def test_a_refused_run_leaves_no_cache_folder(random_weights, tmp_path):
    """Some small programs compile before every input is checked; a refused run still leaves no folder."""
    for bad in ([f"--weights={tmp_path / 'missing.msgpack'}"],
                [f"--weights={random_weights}", f"--content={tmp_path / 'missing.png'}"]):
        cache = tmp_path / "new" / "cache"
        proc, out = _main(tmp_path, "refused", *bad, f"--compile_cache={cache}")
        assert proc.returncode == 2 and proc.stderr.startswith("error: "), proc.stderr
        assert not (tmp_path / "new").exists() and not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    proc, _ = _main(tmp_path, "refused", f"--weights={tmp_path / 'missing.msgpack'}", f"--compile_cache={kept}")
    assert proc.returncode == 2 and kept.is_dir()  # a folder that was there before stays


def test_enable_checks_without_creating(clean_env, monkeypatch):
    import jax

    monkeypatch.setattr(jax.config, "update", lambda *args: None)  # this test process keeps its own settings
    target = clean_env / "a" / "b" / "xla"
    assert compile_cache.enable(str(target)) == str(target)
    assert not (clean_env / "a").exists()
    compile_cache.discard_new()  # nothing created yet: nothing to remove, no error


@pytest.mark.slow
def test_cli_reports_an_unusable_cache_folder_in_one_line(random_weights, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc, out = _main(tmp_path, "x", f"--weights={random_weights}", f"--compile_cache={blocker}/xla")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: compilation cache"), proc.stderr
    assert not out.exists()


@pytest.mark.slow
def test_compare_takes_the_flag_too(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = subprocess.run([sys.executable, "-m", "nst_jax.compare", f"--config={REPO}/configs/test.py",
                           f"--output_dir={tmp_path / 'out'}", f"--compile_cache={blocker}/xla"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: compilation cache"), proc.stderr
    assert not (tmp_path / "out").exists()
