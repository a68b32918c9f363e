"""docs/python-api.md runs as written: every ```python block, in order, in one namespace."""
from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "python-api.md"


def blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_python_api_example_runs(tmp_path, monkeypatch):
    code = blocks(DOC.read_text())
    assert len(code) >= 4, "the page lost its example blocks"
    monkeypatch.setenv("TMPDIR", str(tmp_path))   # the example's tempfile.mkdtemp lands in the test's folder
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ns: dict = {"__name__": "python_api_doc"}
    for i, block in enumerate(code):
        exec(compile(block, f"{DOC.name}[block {i + 1}]", "exec"), ns)
    assert ns["report"].n_ok == 12
    assert ns["refined"].resolved["feedback"]["more_like"] == list(ns["right"])
