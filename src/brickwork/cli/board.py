"""`brickwork board [DIR] [--port N]`: TensorBoard over a runs folder, on 127.0.0.1 only.

Every run's `tb/` folder shows up (scalars, images, and the HParams tab comparing the
runs' hyperparameters with their best and final metrics). Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", nargs="?", type=Path, default=Path("runs"), metavar="DIR")
    parser.add_argument(
        "--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)"
    )


def run(args: argparse.Namespace) -> int:
    from brickwork.errors import ConfigError

    if not args.directory.is_dir():
        raise ConfigError(
            f"{args.directory}: no such folder; pass the folder holding your runs (runs/)"
        )
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: expected 0 (any free port) to 65535")
    port = args.port or free_port()
    server = _start_tensorboard(args.directory, port)
    print(
        f"brickwork board: TensorBoard at http://127.0.0.1:{port}/ over {args.directory} "
        "(Ctrl-C stops it)",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("brickwork board: stopped", file=sys.stderr, flush=True)
    del server
    return 0


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_tensorboard(directory: Path, port: int) -> object:
    """TensorBoard's server on a daemon thread; it ends with this process."""
    import logging

    from tensorboard import program

    from brickwork.errors import ConfigError

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per HTTP request
    board = program.TensorBoard()
    board.configure(
        argv=[None, "--logdir", str(directory), "--host", "127.0.0.1", "--port", str(port)]
    )
    try:
        board.launch()
    except program.TensorBoardServerException as error:
        raise ConfigError(
            f"--port {port}: TensorBoard cannot listen there ({error.msg}); "
            "choose another port or leave --port out for a free one"
        ) from None
    return board
