from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

# Two cores on CI: keep torch from oversubscribing when several things run.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# Data root and derived caches (zslretrieval/paths.py) the tests may write: the general text model,
# text embeddings, exported ONNX graphs. Unless the user set them, they point at one folder per test
# session, so a test run never writes into ~ or the user's data root, while the expensive caches
# (an ONNX export, the general model) are still built once and shared by every test of the session.
SESSION_DIRS = {"ZSLR_DATA": "data", "ZSLR_CACHE": "cache"}
_session_env = pytest.MonkeyPatch()


@pytest.hookimpl(trylast=True)  # after pytest's tmpdir plugin has made the session's base temp folder
def pytest_configure(config):
    unset = [var for var in SESSION_DIRS if not os.environ.get(var)]
    if not unset:
        return
    base = config._tmp_path_factory.mktemp("zslr-session", numbered=False)
    for var in unset:
        _session_env.setenv(var, str(base / SESSION_DIRS[var]))


def pytest_unconfigure(config):
    _session_env.undo()


def pytest_report_header(config):
    return [f"{var}={os.environ.get(var)}" for var in SESSION_DIRS]


SHARED_DATA = Path(os.environ.get("ZSLR_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real benchmark data shipped beside the repo (../shared/data); skip when absent."""
    if not (SHARED_DATA / "xlsa17").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny models (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    on a shared 2-core machine a second torch thread only spin-waits (measured ~7x slower per
    step under load), so such a module runs single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- catalog backends (tests/pg.py): SQLite, and PostgreSQL when $ZSLR_TEST_PG_URL is set ---
@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_db(request):
    """``--db`` of an index under test: None (SQLite file in the index folder) or a fresh PostgreSQL database."""
    from tests.pg import catalog_for

    with catalog_for(request.param) as url:
        yield url


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line per PostgreSQL-backed test, so a CI log shows they ran against a real server."""
    from tests.pg import NOT_SET, PG_URL

    reps = [r for key in ("passed", "failed", "error", "skipped") for r in terminalreporter.stats.get(key, [])
            if getattr(r, "when", "") in ("call", "setup") and re.search(r"[\[-]postgresql[\]-]", r.nodeid)
            and not (r.when == "setup" and r.passed)]
    if not reps:
        return
    tr = terminalreporter
    tr.section("PostgreSQL-backed catalog tests")
    tr.write_line(f"server: {PG_URL}" if PG_URL else NOT_SET)
    counts: dict[str, int] = {}
    for r in reps:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
        tr.write_line(f"{r.outcome.upper():8s} {r.nodeid}")
    tr.write_line("postgresql: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
