from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_local():
    """A 2-CPU local Ray for one test module (started once: ~5-15 s on 2 cores), shut down after.

    Workers import ``tests.*`` (the test backbones are pickled by reference), so the repo root
    goes on their PYTHONPATH.
    """
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": "1"}
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
             object_store_memory=80 * 1024 * 1024, runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()
