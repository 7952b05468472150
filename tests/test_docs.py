"""The user's pages say what the code does: the README's size, commands, flags and links; docs/cli.md generated
from the programs' flag tables and up to date; every relative link of README.md and docs/ resolving."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))

import cli_reference  # noqa: E402

PAGES = ["README.md", *sorted(os.path.join("docs", n) for n in os.listdir(os.path.join(REPO, "docs"))
                               if n.endswith(".md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def read(path: str) -> str:
    with open(os.path.join(REPO, path)) as f:
        return f.read()


def cli_flags() -> set[str]:
    """Every flag named in docs/cli.md's program tables."""
    text = read("docs/cli.md").split("## Config fields")[0]
    return set(re.findall(r"^\| `--(?:\[no\])?([a-z_]+)`", text, re.M))


def test_readme_is_a_page_for_users():
    text = read("README.md")
    assert len(text.splitlines()) <= 250
    assert not re.search(r"\b[0-9a-f]{7}\b(?![0-9a-f])", re.sub(r"sha256 [0-9a-f]+|`[^`]*`", "", text)), \
        "a revision id in the README (history lives in git)"


def test_readme_first_commands_are_the_install_and_test_commands():
    lines = read("README.md").splitlines()[:12]
    commands = [line.strip() for line in lines if line.startswith("    python3 -m venv .venv")]
    assert len(commands) == 2, lines
    assert commands[0].endswith("python -m nst_jax.main --kernel=gaussian")
    assert commands[1].endswith("python -m pytest")


def test_every_flag_the_readme_names_exists():
    named = set(re.findall(r"`--(?:\[no\])?([a-z_]+)", read("README.md")))
    unknown = named - cli_flags() - {"config"}
    assert not unknown, unknown


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page):
    base = os.path.dirname(os.path.join(REPO, page))
    for target in LINK.findall(read(page)):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#")[0]
        assert os.path.exists(os.path.join(base, path)), f"{page}: {target}"


@pytest.mark.slow
def test_cli_reference_is_generated_and_up_to_date():
    assert cli_reference.render() == read("docs/cli.md"), "run python scripts/cli_reference.py"


@pytest.mark.slow
@pytest.mark.parametrize("program", ["nst_jax.main", "nst_jax.compare", "nst_jax.video", "weights_converter"])
def test_cli_reference_lists_every_flag_of_help(program):
    proc = subprocess.run([sys.executable, "-m", program, "--help"], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    helped = set(re.findall(r"--(?:\[no\])?([a-z_]+):", proc.stdout + proc.stderr))
    helped -= {"help", "helpfull", "helpshort", "helpxml"}
    section = read("docs/cli.md").split(f"## `python -m {program}`")[1].split("\n## ")[0]
    listed = set(re.findall(r"^\| `--(?:\[no\])?([a-z_]+)`", section, re.M))
    # --help lists the program's own flags and those it adopts; absl's and JAX's are not the program's.
    assert listed <= helped and (helped - listed) <= _foreign_flags(helped), helped - listed


def _foreign_flags(helped: set[str]) -> set[str]:
    """Flags absl and JAX define for every program (listed by --helpfull, not ours)."""
    return {f for f in helped if f.startswith(("jax_", "xla_", "logtostderr", "alsologtostderr", "log_dir",
                                               "verbosity", "v", "stderrthreshold", "showprefixforinfo",
                                               "logger_levels", "only_check_args", "pdb", "pdb_post_mortem",
                                               "run_with_", "use_cprofile", "profile_file", "flagfile", "undefok",
                                               "op_conversion_fallback_to_while_loop", "runtime_oom_exit",
                                               "hbm_oom_exit"))}
