"""Command line: ``python -m nst_jax.main --kernel=gaussian --content=photo.jpg --style=painting.jpg``.

Flags below override the config's fields of the same name when given; any other field is set with
``--config.FIELD=VALUE`` (``--config=configs/paper_caffe.py`` picks another config file).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from configs import default as default_config
from nst_jax import cli, compile_cache
from nst_jax.errors import UserError

_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

config_flags.DEFINE_config_file("config", os.path.join(_CONFIGS, "default.py"), "Run configuration file.",
                                lock_config=True)
cli.define_run_flags(defaults=default_config.get_config())
# Batch mode (nst_jax.batch): --content_dir switches it on; --style and --kernel then take ';'-separated lists.
flags.DEFINE_string("content_dir", None, "Batch mode: stylise every image in this folder (see nst_jax.batch).")
flags.DEFINE_string("output_dir", None, "Batch mode: where OUT/<content>__<style>__<method>.png and .json go.")
flags.DEFINE_bool("multihost", False, "Join jax.distributed: batch mode splits its jobs over the processes; a "
                  "single run with --shard_image splits its image over every process's devices (a TPU slice).")
flags.DEFINE_string("coordinator_address", None, "With --multihost: host:port of process 0 (default: from the "
                    "environment, as on a Cloud TPU pod slice).")
flags.DEFINE_integer("num_processes", None, "With --multihost: number of processes (default: from the environment).")
flags.DEFINE_integer("process_id", None, "With --multihost: this process's index (default: from the environment).")
flags.DEFINE_string("compile_cache", None, f"Folder of JAX's persistent compilation cache, or 'off' (default: "
                    f"${compile_cache.ENV}, else {compile_cache.default_dir()}).")
flags.DEFINE_bool("preview", False, "Serve a live preview page on 127.0.0.1 (address printed): the current image, "
                  "the losses, the time left and a Stop button that acts as Ctrl-C (see nst_jax.preview).")

flags.adopt_module_key_flags(cli)  # --help lists the run flags defined from cli's table
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected argument(s): {' '.join(argv[1:])} (flags take the form --name=value)")
    logging.set_verbosity(logging.WARNING)  # keep the terminal for the progress bar
    config = FLAGS.config
    cli.apply_run_flags(config)
    try:
        compile_cache.enable(FLAGS.compile_cache)  # before anything is compiled
    except UserError as e:
        cli.fail(str(e))
    if FLAGS.content_dir:
        if FLAGS.preview:
            cli.fail("--preview shows a single run; batch mode (--content_dir) has none")
        sys.exit(cli.run_batch(config, content_dir=FLAGS.content_dir, output_dir=FLAGS.output_dir or "",
                               multihost=FLAGS.multihost, coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id))
    if FLAGS.output_dir:
        cli.fail("--output_dir is a batch-mode flag: give --content_dir too")
    sys.exit(cli.run_one(config, preview=FLAGS.preview, multihost=FLAGS.multihost,
                         coordinator_address=FLAGS.coordinator_address, num_processes=FLAGS.num_processes,
                         process_id=FLAGS.process_id))


def run() -> None:
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
