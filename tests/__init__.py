"""Test helpers importable as `tests.…`."""
