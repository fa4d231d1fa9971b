"""Text that ships with Python: an unlabelled corpus and a small labelled task.

    python examples/hf_text/corpus.py WORK_DIR

Every sentence comes from the docstrings of standard-library modules (module, class
and function docstrings), so nothing is downloaded.

- `WORK_DIR/corpus.txt`: one sentence a line from every importable standard-library
  module *except* those of the labelled task: the unlabelled pre-training text.
- `WORK_DIR/task/{train,val,test}.csv`: `text,label` rows, the label being which family
  of modules a sentence documents (networking, text processing, files, data formats).
  Training has only `TRAIN_PER_CLASS` sentences per class.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import inspect
import io
import random
import re
import sys
import warnings
from pathlib import Path

FAMILIES = {
    "network": ["socket", "ssl", "http.client", "urllib.request", "smtplib", "ftplib"],
    "text": ["re", "string", "textwrap", "difflib", "unicodedata", "codecs"],
    "files": ["os", "pathlib", "shutil", "glob", "tempfile", "filecmp", "zipfile"],
    "formats": ["json", "csv", "pickle", "configparser", "plistlib", "tomllib", "base64"],
}
TRAIN_PER_CLASS, VAL_PER_CLASS, TEST_PER_CLASS = 24, 24, 80
_SKIP = {"this", "antigravity", "idlelib", "turtledemo", "tkinter", "turtle", "pydoc_data"}


def module_sentences(name: str) -> list[str]:
    """Sentences of one module's docstrings; [] when it does not import here."""
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            module = importlib.import_module(name)
    except Exception:  # platform-only modules, missing optional C libraries
        return []
    docs = [module.__doc__ or ""]
    for _, member in inspect.getmembers(module):
        owner = getattr(member, "__module__", "") or ""
        if (inspect.isfunction(member) or inspect.isclass(member)) and owner == name:
            docs.append(inspect.getdoc(member) or "")
            if inspect.isclass(member):
                docs += [inspect.getdoc(m) or "" for m in vars(member).values() if callable(m)]
    text = " ".join(" ".join(doc.split()) for doc in docs)
    sentences = (s.strip() for s in re.split(r"(?<=[.!?])\s+", text))
    return list(dict.fromkeys(s for s in sentences if 5 <= len(s.split()) <= 60))


def write_data(work: Path, seed: int = 0) -> None:
    task_modules = {m for modules in FAMILIES.values() for m in modules}
    names = sorted(sys.stdlib_module_names - _SKIP - task_modules)
    unlabelled = [s for name in names if not name.startswith("_") for s in module_sentences(name)]
    work.mkdir(parents=True, exist_ok=True)
    (work / "corpus.txt").write_text("\n".join(unlabelled) + "\n", encoding="utf-8")
    rng = random.Random(seed)
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "val": [], "test": []}
    for label, modules in FAMILIES.items():
        sentences = [s for m in modules for s in module_sentences(m)]
        rng.shuffle(sentences)
        cut = [TRAIN_PER_CLASS, TRAIN_PER_CLASS + VAL_PER_CLASS]
        splits["train"] += [(s, label) for s in sentences[: cut[0]]]
        splits["val"] += [(s, label) for s in sentences[cut[0] : cut[1]]]
        splits["test"] += [(s, label) for s in sentences[cut[1] : cut[1] + TEST_PER_CLASS]]
    (work / "task").mkdir(exist_ok=True)
    for split, rows in splits.items():
        with (work / "task" / f"{split}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
    counts = {split: len(rows) for split, rows in splits.items()}
    print(f"corpus: {len(unlabelled)} sentences; task: {counts}")


if __name__ == "__main__":
    write_data(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("hf_text_work"))
