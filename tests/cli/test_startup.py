"""``zslr --help`` (and building the command tree) must not import torch, faiss or numpy:
every command pays its start-up, so the library loads inside command bodies only."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys
from zslretrieval.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = [m for m in ("torch", "faiss", "numpy", "sqlalchemy", "zslretrieval.protocol", "zslretrieval.index.reader")
         if m in sys.modules]
print(json.dumps(heavy), file=sys.stderr)
"""


def _heavy_modules_after(*args: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=env, timeout=120)
    assert "Usage: zslr" in r.stdout, r.stdout + r.stderr
    return json.loads(r.stderr.strip().splitlines()[-1])


def test_help_imports_no_library():
    assert _heavy_modules_after("--help") == []


def test_subcommand_help_imports_no_library():
    for cmd in ("train", "index", "query", "demo", "check", "serve"):
        assert _heavy_modules_after(cmd, "--help") == [], cmd


def test_probe_can_see_a_heavy_import():
    # the check itself must be able to fail: eval --help lists the metric names, which come from
    # zslretrieval.metrics (-> scoring -> numpy), loaded on demand by LazyChoice
    assert "numpy" in _heavy_modules_after("eval", "--help")
