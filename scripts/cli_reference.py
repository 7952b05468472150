"""Writes docs/cli.md, the command-line reference, from the programs' own flag tables and the default config.

    python scripts/cli_reference.py            # rewrite docs/cli.md
    python scripts/cli_reference.py --check    # exit 1 if docs/cli.md is not what the code says

Each program's flags come from absl's ``--helpxml`` (run in a subprocess, so every program defines its flags
in its own process, as it does for a user): the program's key flags, with their defaults and help texts. The
config fields that ``--config.FIELD=VALUE`` sets come from ``configs/default.py``'s assignments and their
comments. Machine-specific defaults (the cache folder under the home folder) are written with ``~``, and the
lists of style methods taken from the registry as a phrase (:func:`registry_free`).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT = os.path.join(REPO, "docs", "cli.md")

PROGRAMS = (
    ("nst_jax.main", "Stylise one image, or a batch (`--content_dir`)."),
    ("nst_jax.compare", "Run several methods on one pair, side by side, with a cross-evaluation."),
    ("nst_jax.train", "Train a feed-forward network (johnson or adain) with any style method (docs/feedforward.md)."),
    ("nst_jax.fast", "Apply a trained feed-forward network to images or folders."),
    ("nst_jax.video", "Stylise a video or a folder of frames without flicker ([video](video.md))."),
    ("weights_converter", "Download and convert VGG-19 weights (torchvision, or the Caffe conversion)."),
)

_FIELD = re.compile(r"^\s*c\.([a-z_]+(?:\.[a-z_]+)?) = (.+?)(?:\s+#\s*(.*))?$")


def _cell(text: str) -> str:
    """Text for one table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def program_flags(module: str) -> list[dict[str, str]]:
    """The key flags of ``python -m module`` (name, default, type, meaning), sorted by name."""
    env = {k: v for k, v in os.environ.items() if k not in ("NST_JAX_CACHE", "XDG_CACHE_HOME", "NST_JAX_COMPILE_CACHE")}
    env["HOME"] = "~"  # the default cache folder then reads ~/.cache/nst_jax, whoever runs this
    proc = subprocess.run([sys.executable, "-m", module, "--helpxml"], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"{module} --helpxml exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    root = ET.fromstring(proc.stdout)
    out = []
    for flag in root.iter("flag"):
        if flag.findtext("key") != "yes" or flag.findtext("name") in ("help", "helpfull", "helpshort", "helpxml"):
            continue
        name = flag.findtext("name") or ""
        default = flag.findtext("default") or ""
        meaning = flag.findtext("meaning") or ""
        if name == "config":
            default = "configs/default.py"
        # A run flag's default is its config field's, which its help text ends with.
        from_config = re.search(r"\s*\[configs/default\.py: (.*)\]$", meaning)
        if from_config:
            meaning, default = meaning[:from_config.start()], from_config.group(1)
        out.append({"name": name, "type": flag.findtext("type") or "", "default": registry_free(default),
                    "meaning": registry_free(meaning)})
    return sorted(out, key=lambda f: f["name"])


def registry_free(text: str) -> str:
    """``text`` with the lists of style methods that the programs build from the registry written as a phrase, so
    that this page stays as it is when a method is added as a module (``--help`` lists them)."""
    sys.path.insert(0, REPO)
    from nst_jax import config, losses

    for names, phrase in ((losses.METHODS, "every registered method"),
                          (config.streamable_methods(), "the methods computed from sums")):
        for sep in ("|", ",", ", "):
            text = text.replace(sep.join(names), "{" + phrase + "}")
    return text


def config_fields(path: str = os.path.join(REPO, "configs", "default.py")) -> list[tuple[str, str, str]]:
    """(field, default, comment) of each field of the default config: the value from ``get_config()``, the
    comment from its ``c.FIELD = VALUE  # comment`` line."""
    sys.path.insert(0, REPO)
    from configs import default

    values = default.get_config()
    fields = []
    with open(path) as f:
        for line in f:
            m = _FIELD.match(line)
            if m and not m.group(2).startswith("config_dict.ConfigDict("):
                value = values
                for part in m.group(1).split("."):
                    value = value[part]
                shown = "unset" if value is None else repr(value) if isinstance(value, str) else str(value)
                fields.append((m.group(1), shown, m.group(3) or ""))
    return fields


def render() -> str:
    """The whole of docs/cli.md."""
    lines = [
        "# Command-line reference",
        "",
        "Generated by `python scripts/cli_reference.py` from the programs' flag tables and `configs/default.py`;",
        "do not edit by hand. For what the flags do together, see [usage](usage.md).",
        "",
    ]
    for module, what in PROGRAMS:
        lines += [f"## `python -m {module}`", "", what, "", "| flag | default | meaning |", "| --- | --- | --- |"]
        for f in program_flags(module):
            name = f"`--[no]{f['name']}`" if f["type"] == "bool" else f"`--{f['name']}`"
            words = ("a demo image", "a demo painting", "the cached converted file", "1 each", "equal", "the content's")
            plain = f["default"] in words or " on a " in f["default"]
            default = _cell(f["default"]) if plain else f"`{_cell(f['default'])}`"
            default = "" if f["default"] in ("", "None") else default
            lines.append(f"| {name} | {default} | {_cell(f['meaning'])} |")
        lines.append("")
    lines += [
        "## Config fields",
        "",
        "Every field of the run config; set any of them with `--config.FIELD=VALUE` (for `nst_jax.main`,",
        "`nst_jax.compare` and `nst_jax.video`), or pick another config file with `--config=configs/NAME.py`. A",
        "flag of the same name (above) overrides the field. Defaults are `configs/default.py`'s.",
        "",
        "| field | default | meaning |",
        "| --- | --- | --- |",
    ]
    lines += [f"| `{name}` | `{_cell(value)}` | {_cell(comment)} |" for name, value, comment in config_fields()]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/cli.md is out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        with open(OUTPUT) as f:
            same = f.read() == text
        print("docs/cli.md is up to date" if same else
              "docs/cli.md is out of date: run python scripts/cli_reference.py")
        return 0 if same else 1
    with open(OUTPUT, "w") as f:
        f.write(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
