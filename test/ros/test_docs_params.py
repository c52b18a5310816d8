"""docs/ros.md carries every node's parameter table exactly as the tables in the code generate it."""
from __future__ import annotations

from pathlib import Path

from pvrnn_ros.ros.params import render_docs, tables

DOC = Path(__file__).resolve().parents[2] / "docs" / "ros.md"


def test_docs_parameter_tables_match_the_code():
    text = DOC.read_text()
    assert render_docs(text) == text, ("docs/ros.md is out of date: run "
                                       "`python -m pvrnn_ros.ros.params --update docs/ros.md`")
    for name, table in tables().items():
        for p in table:
            assert f"| `{p.name}` |" in text, f"{name}.{p.name} missing from docs/ros.md"
