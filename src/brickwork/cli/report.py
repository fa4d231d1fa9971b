"""`brickwork report RUN_DIR [RUN_DIR ...] [--output report.html]`: an HTML report to look at.

One folder holding several runs (a tuning study) gets a trials table and plots.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, metavar="RUN_DIR|STUDY_DIR")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("report.html"),
        help="the HTML file (default: report.html); figures go to <name>-figures/ beside it",
    )


def run(args: argparse.Namespace) -> int:
    from brickwork.errors import ConfigError

    if args.output.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"--output {args.output}: expected a .html file, e.g. report.html")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(
            "report needs matplotlib, which is not installed; pip install 'brickwork[report]'"
        ) from None
    from brickwork.report import write_report

    output = write_report(args.paths, args.output)
    print(f"brickwork report: wrote {output} (figures in {output.stem}-figures/)")
    return 0
