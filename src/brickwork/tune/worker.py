"""`python -m brickwork.tune.worker STUDY_DIR INDEX`: one more worker on an Optuna study.

`brickwork tune --workers N` starts N-1 of these beside itself; each shares the
study's journal storage and trains its trials in its own process.
"""

from __future__ import annotations

import sys
from pathlib import Path

from brickwork.tune.optuna_engine import StudyInterrupted, run_worker
from brickwork.tune.study import StudyFolder


def main(argv: list[str]) -> int:
    folder, index = StudyFolder(Path(argv[0])), int(argv[1])
    try:
        run_worker(folder, index)
    except StudyInterrupted:
        return 75
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
