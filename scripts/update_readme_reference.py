"""Rewrite the README's config reference from the schema (`make docs`)."""

from pathlib import Path

from brickwork.config_reference import component_markdown, reference_markdown

START, END = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"
readme = Path(__file__).parents[1] / "README.md"
text = readme.read_text()
head, rest = text.split(START)
_, tail = rest.split(END)
text = head + START + reference_markdown() + END + tail
START, END = "<!-- component-reference:start -->\n", "<!-- component-reference:end -->"
head, rest = text.split(START)
_, tail = rest.split(END)
readme.write_text(head + START + component_markdown() + END + tail)
print(f"updated {readme}")
