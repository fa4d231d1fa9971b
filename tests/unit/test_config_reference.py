"""The README's config reference is generated from the schema and must not drift."""

from __future__ import annotations

from pathlib import Path

from brickwork.config_reference import component_markdown, reference_markdown, reference_rows

README = Path(__file__).parents[2] / "README.md"


def test_every_schema_key_has_a_description() -> None:
    undocumented = [key for key, _, _, meaning in reference_rows() if not meaning]
    assert not undocumented, f"describe these in config_reference.DESCRIPTIONS: {undocumented}"


def test_readme_reference_matches_the_schema() -> None:
    text = README.read_text()
    start = text.index("<!-- config-reference:start -->\n") + len(
        "<!-- config-reference:start -->\n"
    )
    end = text.index("<!-- config-reference:end -->")
    assert text[start:end] == reference_markdown(), "run `make docs` to regenerate the README"


def test_readme_lists_every_built_in_models_and_datasets_arguments() -> None:
    text = README.read_text()
    start = text.index("<!-- component-reference:start -->\n")
    end = text.index("<!-- component-reference:end -->")
    table = component_markdown()
    assert text[start + len("<!-- component-reference:start -->\n") : end] == table, (
        "run `make docs` to regenerate the README"
    )
    assert "| model `mlp` | `hidden_sizes` | list of int > 0 |" in table
    assert "| dataset `tabular_csv` | `missing` | 'mean' or 'median' or 'error' | `mean` |" in table
