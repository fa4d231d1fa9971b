"""What `brickwork doctor` found: checks with a status and a fix, printed and saved as JSON.

A check is one line a person reads (`message`), the one-line fix when it is not ok,
and the figures behind it (`data`) for `doctor.json`. The report is healthy when no
check failed; warnings are advice.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from brickwork.errors import BrickworkError
from brickwork.files import write_atomically

Status = Literal["ok", "info", "warn", "fail"]
SECTIONS = ("environment", "preflight", "speed", "memory", "leaks", "batch size")
_MARK = {"ok": "ok  ", "info": "    ", "warn": "WARN", "fail": "FAIL"}
# doctor.json names its writer, so a later run overwrites only a report brickwork wrote.
WRITER = "brickwork doctor"


@dataclass
class Check:
    """One finding: `fail` means training would break or silently go wrong."""

    section: str
    name: str
    status: Status
    message: str
    fix: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class DoctorReport:
    """Every check of one `brickwork doctor` run, in the order they ran."""

    checks: list[Check] = field(default_factory=list)
    main_process: bool = True  # under torchrun: whether this rank prints and writes it

    def add(
        self,
        section: str,
        name: str,
        status: Status,
        message: str,
        fix: str | None = None,
        **data: Any,
    ) -> Check:
        check = Check(section, name, status, message, fix, data)
        self.checks.append(check)
        return check

    @property
    def healthy(self) -> bool:
        return not any(check.status == "fail" for check in self.checks)

    def find(self, name: str) -> Check | None:
        """The first check called `name` (for tests and callers that read one figure)."""
        return next((check for check in self.checks if check.name == name), None)

    def format(self) -> str:
        """The terminal report: one line per check, its fix indented below it."""
        lines: list[str] = []
        for section in SECTIONS:
            checks = [c for c in self.checks if c.section == section]
            if not checks:
                continue
            lines.append(f"\n{section}")
            for check in checks:
                lines.append(f"  {_MARK[check.status]} {check.message}")
                if check.fix and check.status in ("warn", "fail"):
                    lines.append(f"         fix: {check.fix}")
        failed = sum(c.status == "fail" for c in self.checks)
        warned = sum(c.status == "warn" for c in self.checks)
        verdict = "healthy" if not failed else f"{failed} check(s) failed"
        lines.append(f"\n{verdict}, {warned} warning(s)")
        return "\n".join(lines).lstrip("\n")

    def to_dict(self) -> dict[str, Any]:
        return {
            "writer": WRITER,
            "healthy": self.healthy,
            "checks": [asdict(check) for check in self.checks],
        }

    def save(self, path: Path) -> None:
        """Write `doctor.json`; refuses to replace a file that brickwork did not write."""
        check_output(path)
        write_atomically(path, json.dumps(self.to_dict(), indent=2, default=str) + "\n")


def check_output(path: Path) -> None:
    """Refuse, before any work, a report path holding a file brickwork doctor did not write."""
    if path.exists() and not _written_by_doctor(path):
        raise BrickworkError(
            f"--output {path}: the file exists and was not written by brickwork doctor; "
            "pass another --output path or move the file"
        )


def _written_by_doctor(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("writer") == WRITER
    except (OSError, ValueError, AttributeError):
        return False
