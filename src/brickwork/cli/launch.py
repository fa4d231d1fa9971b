"""Start one training process per device through torchrun's launcher.

`brickwork train CONFIG trainer.devices=4` re-runs itself as 4 ranks; each rank then
trains through the same `brickwork train` code path it would under a hand-typed
`torchrun --nproc-per-node=4 -m brickwork train CONFIG`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from brickwork.distributed import env_world_size
from brickwork.errors import ConfigError

if TYPE_CHECKING:
    from brickwork.config import TrainerConfig


def launch_processes(num_processes: int, argv: Sequence[str]) -> int:
    """Run `python -m brickwork ARGV` in `num_processes` ranks through torchrun; its exit code.

    Uses torchrun's own launcher (elastic agent, `--standalone` rendezvous on a free
    local port). When the ranks exit with the same code (75 after a SIGTERM, 2 for a
    user error) that code is returned; any other failure returns 1.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from brickwork.stop import EXIT_PREEMPTED

    if torch.cuda.is_available() and num_processes > torch.cuda.device_count():
        raise ConfigError(
            f"trainer.devices = {num_processes}: this machine has "
            f"{torch.cuda.device_count()} GPU(s); use at most that many"
        )
    args = parse_args(
        ["--standalone", f"--nproc-per-node={num_processes}", "-m", "brickwork", *argv]
    )
    try:
        run(args)
    except ChildFailedError as error:
        # Negative codes are ranks the agent itself terminated once the first rank had
        # exited; the codes ranks chose themselves tell what happened.
        codes = {f.exitcode for f in error.failures.values() if f.exitcode >= 0}
        return codes.pop() if len(codes) == 1 and codes <= {2, EXIT_PREEMPTED} else 1
    except SignalException:
        # The agent forwarded the signal to the ranks, which stopped together and saved.
        return EXIT_PREEMPTED
    return 0


def should_launch(trainer: TrainerConfig) -> bool:
    """Whether `brickwork train` must start one process per device itself."""
    return trainer.devices > 1 and trainer.strategy != "dp" and env_world_size() == 1
