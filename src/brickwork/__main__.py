"""`python -m brickwork` runs the command-line interface."""

from brickwork.cli import main

raise SystemExit(main())
