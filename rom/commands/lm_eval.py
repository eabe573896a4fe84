"""`rom lm-eval ARGS...`: lm-evaluation-harness's own command line with this toolkit's model class registered.

lm-eval cannot load a model class from outside its tree on its command line; this command imports
rom.eval.lm_eval_model (which registers ``--model rom``) and hands every argument after ``lm-eval``, unparsed,
to lm-eval's CLI, so ``rom lm-eval --model rom --model_args run_dir=RUN_DIR --tasks ...`` is exactly
``lm_eval --model rom ...``. ``rom lm-eval --help`` is lm-eval's help. Model args: run_dir, tokenizer,
max_length (docs/downstream.md); give the device and batch size as lm-eval's --device / --batch_size.
Offline, set HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 (else the hub is retried for ~20 s).
"""

from __future__ import annotations

import argparse
import sys

HELP = "run lm-evaluation-harness's command line with `--model rom` registered (arguments go to lm-eval as they are)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # every token, options and -h included, belongs to lm-eval: nothing after `lm-eval` looks like an option here
    parser.prefix_chars = "\x00"
    parser.add_argument("lm_eval_args", nargs=argparse.REMAINDER, metavar="LM_EVAL_ARGS",
                        help="lm-eval's arguments, e.g. --model rom --model_args run_dir=RUN_DIR --tasks ...")


def run(args: argparse.Namespace) -> int:
    try:
        import lm_eval.__main__ as lm_eval_main
    except ImportError:
        print("rom lm-eval: lm-eval is not installed (pip install 'lm-eval>=0.4.5', or the toolkit's [eval] extra)",
              file=sys.stderr)
        return 1
    import rom.eval.lm_eval_model  # noqa: F401 - registers the model class `rom`

    saved = sys.argv
    sys.argv = ["lm-eval", *args.lm_eval_args]
    try:
        lm_eval_main.cli_evaluate()
    except SystemExit as e:  # lm-eval's argparse (--help, bad arguments) and its own exits
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved
    return 0
