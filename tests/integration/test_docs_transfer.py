"""The YAML in docs/transfer.md and the example configs validate against the schema."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from brickwork.config import check_component_kwargs, load_config, validate_config

ROOT = Path(__file__).resolve().parents[2]


def _doc_blocks() -> list[str]:
    text = (ROOT / "docs" / "transfer.md").read_text(encoding="utf-8")
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.parametrize("index", range(len(_doc_blocks())))
def test_docs_yaml_block_is_a_valid_config_section(index: int) -> None:
    raw = yaml.safe_load(_doc_blocks()[index])
    check_component_kwargs(validate_config(raw))


@pytest.mark.parametrize("name", ["pretrain.yaml", "finetune.yaml"])
def test_example_config_is_valid(name: str) -> None:
    load_config(ROOT / "examples" / "transfer" / name)
