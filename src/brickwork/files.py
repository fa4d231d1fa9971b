"""Writing files so that a crash leaves the old version or the new one, never half of one.

Every file brickwork rewrites in place (`summary.json`, `config.yaml`, `data.json`,
a trimmed `metrics.jsonl`) goes through `write_atomically`; checkpoints, which are
folders, use the fsync helpers here for the same guarantee (see `brickwork.checkpoint`).
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text`: readers see the old or the new file, never a mix.

    The text goes to a hidden temporary file beside `path`, is fsynced, then renamed
    over it (a rename within one folder is atomic on POSIX and Windows).
    """
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with temporary.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise naming_file(error, path) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def naming_file(error: OSError, path: Path) -> OSError:
    """`error` with `path` as its file name: a failed `write()` (a full disk) carries none,
    and the one-line message a user reads must say which file could not be written."""
    temporary = f".{path.name}.tmp-{os.getpid()}"  # write_atomically's: name the real file
    if error.filename is not None and Path(error.filename).name != temporary:
        return error
    return type(error)(error.errno, error.strerror, str(path))


def fsync_file(path: Path) -> None:
    """Push a file's bytes to the disk (a rename alone does not)."""
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def fsync_directory(path: Path) -> None:
    """Make a rename or new entry in `path` survive a power cut (POSIX only)."""
    if os.name != "posix":
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def refuse_to_replace(path: Path, option: str, force: bool = False) -> None:
    """Stop before a write would replace a file brickwork did not create.

    A user's own `config.yaml` or results beside an `--output` are theirs: writing over
    them takes `--force`. Raises ConfigError naming the file.
    """
    from brickwork.errors import ConfigError

    if force or not (path.exists() or path.is_symlink()):
        return
    raise ConfigError(
        f"{option} {path}: the file already exists and brickwork did not write it here; "
        "choose another path, remove the file, or pass --force to replace it"
    )
