"""Every method on one content/style pair, in one sheet: ``python -m nst_jax.compare --content A --style B``.

Writes into ``--output_dir``: one image and run record per method (``gram.png``, ``gram.json``, ...), the
labelled sheet ``sheet.png`` (content, style, each result with its method, time and final losses, and the
cross-evaluation table), the loss curves ``losses.png``, the cross-evaluation ``metrics.md`` and
``metrics.json`` (:mod:`nst_jax.evaluate`) and ``summary.json``. Fusions are written with ``+``:
``linear+gaussian``.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from configs import default as default_config
from nst_jax import cli, compile_cache, evaluate, image, losses, outputs, report, runner, sheet
from nst_jax import config as cfg_lib
from nst_jax import weights as weights_lib
from nst_jax.atomic import write_json, write_text
from nst_jax.errors import ConfigError, UserError

_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
DEFAULT_METHODS = ",".join([*losses.METHODS, "linear+gaussian", "bn+poly"])  # every method, and the paper's fusions
COMPARE_RUN_FLAGS = ("content", "style", "size", "steps", "weights", "seed", "content_mask", "style_mask",
                     "mask_fallback")

config_flags.DEFINE_config_file("config", os.path.join(_CONFIGS, "default.py"), "Base run configuration.",
                                lock_config=True)
cli.define_run_flags(COMPARE_RUN_FLAGS, helps={"steps": "Steps per method."}, defaults=default_config.get_config())
flags.adopt_module_key_flags(cli)  # --help lists the run flags defined from cli's table
flags.DEFINE_string("output_dir", "compare", "Folder for the results, the sheet and the plot.")
flags.DEFINE_string("methods", DEFAULT_METHODS, "Comma-separated methods; fusions joined by + (equal weights).")
flags.DEFINE_bool("metrics", True, "Cross-evaluate the results (metrics.md, the sheet's table): exact pairwise "
                  "sums, minutes per result at 256 px on a CPU; --nometrics skips it.")
flags.DEFINE_string("compile_cache", None, f"Folder of JAX's persistent compilation cache, or 'off' (default: "
                    f"${compile_cache.ENV}, else {compile_cache.default_dir()}).")
flags.DEFINE_bool("preview", False, "Serve a live preview page on 127.0.0.1 (address printed): each method's "
                  "current image and losses, the time left, and a Stop button that ends the comparison as Ctrl-C "
                  "does (see nst_jax.preview).")
FLAGS = flags.FLAGS


def method_configs(base, methods: str) -> list[tuple[str, cfg_lib.RunSpec]]:
    """(label, parsed config) per entry of ``methods`` (comma-separated; a fusion joins its methods with ``+``,
    as ``--kernel`` does); fusions get equal kernel weights."""
    out = []
    for label in [m.strip() for m in methods.split(",") if m.strip()]:
        parts = [p.strip() for p in label.split("+")]
        cfg = base.copy_and_resolve_references()
        with cfg.unlocked():
            cfg.kernel = "+".join(parts)
            cfg.kernel_weights = ",".join([f"{1 / len(parts):g}"] * len(parts)) if len(parts) > 1 else ""
        out.append((label, cfg_lib.parse(cfg)))
    if not out:
        raise ConfigError("--methods is empty")
    return out


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected argument(s): {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    base = FLAGS.config
    cli.apply_run_flags(base)
    try:
        compile_cache.enable(FLAGS.compile_cache)  # before anything is compiled
        runs = method_configs(base, FLAGS.methods)
        out_dir = FLAGS.output_dir
        outputs.check_output(os.path.join(out_dir, "sheet.png"), [base.content, *runner.style_inputs(base.style)])
        weights = weights_lib.load(weights_lib.resolve(base.weights or None, base.source))
        for note in cfg_lib.machine_notes(base):
            print(note, file=sys.stderr)
        (content_rgb, _), styles = runner.prepare_images(base.content or None, base.style or None, base)
        tiles, curves, summary, results = [], {}, {"runs": {}}, {}
        with cli.StopOnInterrupt() as stop, cli.preview_page(FLAGS.preview, stop, f"nst_jax.compare: {out_dir}") \
                as page:
            for i, (label, spec) in enumerate(runs):
                print(f"== {label}", file=sys.stderr, flush=True)
                out = os.path.join(out_dir, label + ".png")
                if page:
                    page.begin(label, f"method {i + 1} of {len(runs)}")
                try:
                    result, record = runner.stylize(base.content or None, base.style or None, spec, weights=weights,
                                                    progress=cli.tee(report.ProgressBar(), page and page.progress),
                                                    on_image=page and page.image, should_stop=stop)
                except runner.Interrupted as e:
                    outputs.prepare_output(out)
                    image.save_image(out, e.image)
                    message = (f"interrupted: {label} at step {e.record['steps_run']}, its current image in {out}; "
                               f"{i} method(s) complete in {out_dir}; no sheet (rerun to compare them all)")
                    print(message, file=sys.stderr, flush=True)
                    if page:
                        page.finish("interrupted", message)
                    sys.exit(130)
                outputs.write_outputs(out, result, record)
                final = record["final_losses"]
                tiles.append((result, f"{label}  {record['run_s']:.1f} s (+{record['compile_s']:.0f} s compile)\n"
                                      f"style{'~' if record['notes'] else ''} {final['style']:.3g} "
                                      f"content {final['content']:.3g}"))
                curves[label] = record["losses"]
                results[label] = result
                summary["runs"][label] = {"output": out, "run_s": record["run_s"], "compile_s": record["compile_s"],
                                          "final_losses": final, "balance": record["balance"]}
            if page:
                page.finish("done", "every method has run; cross-evaluation and sheet next")
        w = weights
        footer = "weights: " + weights_lib.describe(w)
        cells: list[list[str]] = []
        if FLAGS.metrics:
            print("== cross-evaluation", file=sys.stderr, flush=True)
            t0 = time.time()
            table = evaluate.cross_distances(
                runs[0][1].problem(), weights.params, weights.source,  # its layers and pooling
                {name: cls.from_config(base) for name, cls in losses.REGISTRY.items()}, content_rgb, styles[0][0],
                results)
            metrics_note = (f"Distance of each result to the style image (the first style) at "
                            f"{', '.join(cfg_lib.csv(base.style_layers))}, divided by the content image's; "
                            f"content: the result's content loss divided by the style image's. Weights: "
                            f"{weights_lib.describe(w)}.")
            write_text(os.path.join(out_dir, "metrics.md"), evaluate.markdown(table, metrics_note), what="metrics")
            write_json(os.path.join(out_dir, "metrics.json"),
                       {**table, "note": metrics_note, "seconds": time.time() - t0}, what="metrics")
            cells = evaluate.table_cells(table)
        style_tiles = [(rgb, "style" if len(styles) == 1 else f"style {i + 1}") for i, (rgb, _) in enumerate(styles)]
        grid = sheet.contact_sheet([(content_rgb, "content"), *style_tiles, *tiles], footer=footer,
                                   table=cells)
        image.save_image(os.path.join(out_dir, "sheet.png"), grid)
        sheet.loss_plot(os.path.join(out_dir, "losses.png"), curves, title="energy relative to step 0")
        summary["weights"] = {"path": w.path, "source": w.source, "sha256": w.sha256, "origin": w.origin}
        write_json(os.path.join(out_dir, "summary.json"), summary, what="summary")
    except UserError as e:
        cli.fail(str(e))
    written = ["sheet.png", "losses.png", *(["metrics.md"] if FLAGS.metrics else [])]
    print(f"wrote {', '.join(os.path.join(out_dir, n) for n in written)}", file=sys.stderr)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
