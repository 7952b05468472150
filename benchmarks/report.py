"""Renders ``docs/results/`` from the recorded benchmark results: one page per machine class, and an index.

    python -m benchmarks.report            # writes docs/results/<machine class>.md and docs/results/README.md
    python -m benchmarks.report --check    # exit 1 if the committed pages are not what the JSON renders to

A benchmark run with ``--record`` files its JSON (:mod:`benchmarks.results`) as
``benchmarks/results/<machine class>/<name>.json``; this renders every such file: per file a section with the
date, commit, machine, library versions, weights and the exact command, then the benchmark's own tables (its
module's ``table(doc)``). Output depends on the JSON and this code only (no clock, sorted files), so the same
JSON gives the same bytes and a test can check that the committed pages are current. Pages are generated:
never edit them by hand; run the benchmark again with ``--record``, then this.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from benchmarks import results

DOCS_DIR = os.path.join(results.REPO, "docs", "results")
# Sections in this order on a page; other benchmarks after them, by name.
ORDER = ("run", "conv_bound", "end_to_end", "memory", "fast", "shard", "losses_bench", "loop_and_load", "report_cost",
         "preview_cost", "bf16_psnr")
RANDOM = "random weights (speed does not depend on them)"


def title(benchmark: str) -> str:
    """The benchmark module's docstring's first line, Sphinx roles (``:mod:`x` ``) as plain code."""
    doc = (importlib.import_module(f"benchmarks.{benchmark}").__doc__ or "").strip()
    line = doc.splitlines()[0].rstrip(".:") if doc else benchmark
    return re.sub(r":\w+:`([^`]*)`", r"`\1`", line.replace("``", "`"))


def weights_line(w: dict[str, Any]) -> str:
    """One line on the weights a run used (:func:`benchmarks.results.weights_record`)."""
    if w.get("random_init"):
        what = RANDOM
    elif w.get("pretrained"):
        what = f"pretrained, {w['pretrained']}"
    else:
        what = "neither torchvision's random initialisation nor a published pretrained file"
    details = [f"`{w['file']}`" if w.get("file") else "", f"sha256 `{w['sha256'][:12]}`" if w.get("sha256") else "",
               f"from {w['origin']}" if w.get("origin") else ""]
    details = [d for d in details if d]
    return what + (f": {', '.join(details)}" if details else "")


def header(doc: dict[str, Any]) -> str:
    """Date, commit, machine, versions, environment, weights and command of a results document, as Markdown."""
    meta, settings = doc["meta"], doc["settings"]
    m, git = meta["machine"], meta["git"]
    commit = "unknown (not a git checkout)" if not git.get("commit") else (
        f"`{git['commit'][:12]}`" + (" plus uncommitted changes" if git.get("dirty") else ""))
    memory = f", {m['memory_bytes'] / 2**30:.0f} GiB memory" if m.get("memory_bytes") else ""
    lines = [f"- Date: {meta['date']}",
             f"- Commit: {commit}",
             f"- Machine: {m['cpu']}, {m['cores']} cores{memory}; JAX devices: {m['device_count']} x "
             f"{m['device_kind']} ({m['platform']}); {m['os']}",
             "- Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())]
    if meta.get("load") is not None:
        lines.append(f"- Load average (1 min) when it started: {meta['load']:.2f} on {m['cores']} cores")
    if meta.get("env"):
        lines.append("- Environment: " + ", ".join(f"`{k}={v}`" for k, v in meta["env"].items()))
    if isinstance(settings.get("weights"), dict):
        lines.append(f"- Weights: {weights_line(settings['weights'])}")
    lines += ["- Command:", "", "  ```sh", f"  {meta['command']}", "  ```"]
    return "\n".join(lines) + "\n"


def section(doc: dict[str, Any], name: str | None = None) -> str:
    """A document's section: ``## benchmarks.<benchmark>``, its title, :func:`header`, the benchmark's tables.
    ``name``: the recorded file's stem where it is not the benchmark's name (``--record=run-1024``)."""
    benchmark = doc["meta"]["benchmark"]
    module = importlib.import_module(f"benchmarks.{benchmark}")
    return f"## {_heading(benchmark, name)}\n\n{title(benchmark)}.\n\n{header(doc)}\n{module.table(doc)}"


def _heading(benchmark: str, name: str | None) -> str:
    return f"benchmarks.{benchmark}" + (f" ({name})" if name and name != benchmark else "")


def _order(item: tuple[str, dict[str, Any]]) -> tuple[int, str, str]:
    name, doc = item
    benchmark = doc["meta"]["benchmark"]
    return (ORDER.index(benchmark) if benchmark in ORDER else len(ORDER), benchmark, name)


def load(root: str) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """``{machine class: [(file stem, document)]}`` from ``root/<class>/*.json``, in page order; ValueError if a
    file is not a results document or sits under another class than the one it records."""
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for path in sorted(glob.glob(os.path.join(root, "*", "*.json"))):
        cls = os.path.basename(os.path.dirname(path))
        doc = results.read(path)
        if doc["meta"]["machine"]["class"] != cls:
            raise ValueError(f"{path}: recorded on machine class {doc['meta']['machine']['class']}, filed under {cls}")
        out.setdefault(cls, []).append((os.path.splitext(os.path.basename(path))[0], doc))
    return {cls: sorted(items, key=_order) for cls, items in sorted(out.items())}


def page(cls: str, items: list[tuple[str, dict[str, Any]]]) -> str:
    """``docs/results/<cls>.md``: a short preface, then each document's :func:`section`."""
    parts = [f"# Benchmark results: {cls}\n",
             f"Generated by `python -m benchmarks.report` from `benchmarks/results/{cls}/*.json`, which the "
             "benchmark commands below wrote with `--record`. Do not edit: run a command again, then the report. "
             "Only the current figures are here; earlier ones are in the git history of those files. Absolute "
             "times depend on what else the machine ran at the time; ratios measured side by side in one run "
             "(the frameworks taking turns within each round) are the robust figures.\n",
             "Contents: " + ", ".join(f"[{name}](#{_anchor(doc, name)})" for name, doc in items) + ".\n"]
    parts += [section(doc, name) for name, doc in items]
    return "\n".join(parts)


def _anchor(doc: dict[str, Any], name: str) -> str:
    """GitHub's anchor of :func:`section`'s heading: lower case, spaces to '-', punctuation but '-' and '_' gone."""
    heading = _heading(doc["meta"]["benchmark"], name)
    return "".join(c for c in heading.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def index(pages: dict[str, list[tuple[str, dict[str, Any]]]]) -> str:
    """``docs/results/README.md``: every machine class's page and what it holds."""
    lines = ["# Benchmark results\n",
             "One page per machine class, generated by `python -m benchmarks.report` from "
             "`benchmarks/results/<machine class>/*.json` (written by the benchmark commands with `--record`: "
             "commit, date, machine, versions and command beside the figures). Do not edit these pages; "
             "`python -m benchmarks.report --check` fails when they differ from what the JSON renders to.\n"]
    if not pages:
        lines.append("No results recorded yet.\n")
        return "\n".join(lines)
    lines += ["| machine class | machine | benchmark | date | commit |", "| --- | --- | --- | --- | --- |"]
    for cls, items in pages.items():
        for name, doc in items:
            meta = doc["meta"]
            m = meta["machine"]
            commit = (meta["git"].get("commit") or "unknown")[:12] + ("+" if meta["git"].get("dirty") else "")
            lines.append(f"| [{cls}]({cls}.md) | {m['cpu']}, {m['cores']} cores, {m['device_count']} x "
                         f"{m['device_kind']} | [{name}]({cls}.md#{_anchor(doc, name)}) | {meta['date'][:10]} | "
                         f"`{commit}` |")
    lines.append("\nA commit marked + had uncommitted changes in the tree when the benchmark ran.\n")
    return "\n".join(lines)


README = os.path.join(results.REPO, "README.md")
README_MARKERS = ("<!-- results:begin -->\n", "<!-- results:end -->")


def headline(pages: dict[str, list[tuple[str, dict[str, Any]]]]) -> str:
    """The README's results block: per machine class with a ``run`` result, nst_jax's ms per iteration against
    PyTorch eager's for every method at the first size, with the machine, date, load and a link to the page."""
    lines = []
    for cls, items in pages.items():
        runs = [(name, doc) for name, doc in items if name == "run"]
        if not runs:
            continue
        name, doc = runs[0]
        meta, res = doc["meta"], doc["results"]
        m = meta["machine"]
        size = min(r["size"] for r in res)
        ms = {(r["method"], r["framework"]): r.get("ms_per_iter") for r in res if r["size"] == size}
        methods = list(dict.fromkeys(r["method"] for r in res if r["size"] == size))
        load = f", load {meta['load']:.1f}" if meta.get("load") is not None else ""
        lines += [f"**{cls}**: {m['cpu']}, {m['cores']} cores; {size} px; {meta['date'][:10]}{load}; "
                  f"[the full table and command]({os.path.relpath(DOCS_DIR, results.REPO)}/{cls}.md#"
                  f"{_anchor(doc, name)}).", "",
                  "| method | nst_jax ms/it | PyTorch eager ms/it | PyTorch / nst_jax |",
                  "| --- | ---: | ---: | ---: |"]
        for method in methods:
            j, t = ms.get((method, "jax")), ms.get((method, "torch_eager"))
            cells = ["" if v is None else f"{v:.0f}" if v >= 10 else f"{v:.2f}" for v in (j, t)]
            ratio = f"{t / j:.2f}x" if j and t else ""
            lines.append(f"| {method} | {cells[0]} | {cells[1]} | {ratio} |")
        lines.append("")
        lines += _fast_headline(cls, dict(items).get("fast"))
    if not lines:
        return "No results recorded yet.\n"
    return "\n".join(lines)


def _fast_headline(cls: str, doc: dict[str, Any] | None) -> list[str]:
    """The feed-forward networks' lines of the README's block (``benchmarks.fast``): nst_jax against PyTorch
    eager, training steps and inference per image, as times and their ratio."""
    if doc is None:
        return []
    res, s = doc["results"], doc["settings"]
    train = {r["framework"]: r["s_per_step"] for r in res["train"]}
    infer = {(r["size"], r["framework"]): r["ms_per_image"] for r in res["inference"]}
    rows = [(f"training step, {s['size']} px, batch {s['batch']} (s)", train.get("jax"), train.get("torch_eager"))]
    rows += [(f"inference, {size} px (ms)", infer.get((size, "jax")), infer.get((size, "torch_eager")))
             for size in sorted({size for size, _ in infer})]
    out = [f"Feed-forward Johnson network ([the tables](docs/results/{cls}.md#{_anchor(doc, 'fast')})):", "",
           "| | nst_jax | PyTorch eager | PyTorch / nst_jax |", "| --- | ---: | ---: | ---: |"]
    for label, j, t in rows:
        cells = ["" if v is None else f"{v:.0f}" if v >= 10 else f"{v:.2f}" for v in (j, t)]
        out.append(f"| {label} | {cells[0]} | {cells[1]} | {f'{t / j:.2f}x' if j and t else ''} |")
    return [*out, ""]


def readme_with(text: str, block: str) -> str:
    """``text`` (the README) with the part between :data:`README_MARKERS` replaced by ``block``."""
    begin, end = README_MARKERS
    if begin not in text or end not in text:
        raise ValueError(f"README.md lacks the markers {begin.strip()} and {end}")
    head, rest = text.split(begin, 1)
    return head + begin + block + rest[rest.index(end):]


def render(root: str | None = None) -> dict[str, str]:
    """``{file name: text}`` of every page in ``docs/results/``: ``README.md`` and one ``<class>.md`` per class,
    from ``root`` (default :data:`benchmarks.results.RESULTS_DIR`)."""
    pages = load(results.RESULTS_DIR if root is None else root)
    return {"README.md": index(pages), **{f"{cls}.md": page(cls, items) for cls, items in pages.items()}}


def stale(rendered: dict[str, str], docs: str) -> list[str]:
    """The pages in ``docs`` that differ from ``rendered``, are missing, or are ``.md`` files it does not make."""
    out = []
    for name, text in rendered.items():
        path = os.path.join(docs, name)
        try:
            with open(path, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current != text:
            out.append(name + (" (missing)" if current is None else " (differs)"))
    extra = sorted(set(os.listdir(docs)) - set(rendered)) if os.path.isdir(docs) else []
    return out + [f"{name} (no results render to it)" for name in extra if name.endswith(".md")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=None, help="folder of <machine class>/*.json (default: "
                        "benchmarks/results)")
    parser.add_argument("--docs", default=DOCS_DIR, help="folder the pages go to")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the pages are not current")
    args = parser.parse_args(argv)
    try:
        rendered = render(args.results)
    except (OSError, ValueError, KeyError, ImportError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    with open(README, encoding="utf-8") as f:
        readme = f.read()
    try:
        new_readme = readme_with(readme, headline(load(results.RESULTS_DIR if args.results is None else args.results)))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        bad = stale(rendered, args.docs) + (["../../README.md (its results block differs)"]
                                            if new_readme != readme and args.docs == DOCS_DIR else [])
        for line in bad:
            print(f"{os.path.join(args.docs, line)}: not what `python -m benchmarks.report` renders", file=sys.stderr)
        return 1 if bad else 0
    from nst_jax import atomic

    for name, text in rendered.items():
        atomic.write_text(os.path.join(args.docs, name), text)
    if args.docs == DOCS_DIR and new_readme != readme:
        atomic.write_text(README, new_readme)
    for line in stale(rendered, args.docs):  # pages of classes whose results are gone
        print(f"note: {os.path.join(args.docs, line)}; delete it if its machine class is gone", file=sys.stderr)
    print(f"wrote {len(rendered)} pages to {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
