"""The package version, in a module of its own so anything can read it without import cycles.

`RUN_FORMAT_VERSION` is the version of what a run folder holds (`summary.json` records
it as `format_version`); `brickwork.run_format` reads folders of older versions:

    1  epochs counted from 0 in `metrics.jsonl`, `summary.json`'s `best.epoch` and
       `finetune.unfreeze[].at_epoch` (the console counted from 1)
    2  epochs counted from 1 everywhere a user reads or writes: epoch N is the N-th
"""

__version__ = "0.1.0"
RUN_FORMAT_VERSION = 2
