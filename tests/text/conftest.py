from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def general_root(tmp_path_factory):
    """A data folder holding the real general model of efficientnet-lite0, built once per session.

    Built (``rebuild=True``), not taken from the copy shipped in the package: the tests check the
    build protocol itself, and ``test_general_shipped.py`` checks that this build is the shipped file.
    ``ZSLR_DATA`` points at it for the session, so CLI queries find the cached model.
    """
    import torch

    from zslretrieval.text.general import load_general_model
    root = tmp_path_factory.mktemp("zslr-data")
    mp = pytest.MonkeyPatch()
    mp.setenv("ZSLR_DATA", str(root))
    before = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny DEM steps: a second thread only spin-waits on a shared machine
    try:
        load_general_model("efficientnet-lite0", data_root=root, rebuild=True, log=lambda m: None)
    finally:
        torch.set_num_threads(before)
    yield root
    mp.undo()
