"""The local executor: contiguous partitions cut at batch boundaries, features of the pipeline."""
from __future__ import annotations

import numpy as np
import pytest

import tests.index.fakes  # noqa: F401  (registers tiny-test)
from tests.index.fakes import write_images
from zslretrieval.distributed import EncodeOptions, make_executor
from zslretrieval.errors import UnknownNameError
from zslretrieval.features import extract_features, load_backbone
from zslretrieval.ingest import IndexConfig, index_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_local_partitions_cover_the_list_in_order(tmp_path):
    paths = [str(p) for p in write_images(tmp_path, 23, seed=1, size=36)]
    (tmp_path / "bad.jpg").write_bytes(b"x")
    paths.insert(5, str(tmp_path / "bad.jpg"))
    bb = load_backbone("tiny-test")
    parts = list(make_executor("local").run(paths, bb, EncodeOptions(device="cpu", batch_size=4, workers=0, chunk_size=10)))
    # cut at the first batch boundary >= 10 paths: 12, 12, then the rest
    assert [(p.start, p.stop) for p in parts] == [(0, 12), (12, 24)]
    pos = np.concatenate([p.positions for p in parts])
    assert [i for p in parts for i, _ in p.failures] == [5]
    np.testing.assert_array_equal(pos, [i for i in range(24) if i != 5])
    assert all(p.staged is None and len(p.meta) == p.stop - p.start for p in parts)
    x, ok, _ = extract_features(paths, bb, batch_size=4, device="cpu", workers=0)
    np.testing.assert_array_equal(np.concatenate([p.load_features(bb.dim) for p in parts]), x)


def test_unknown_executor_fails_before_anything_is_written(tmp_path):
    write_images(tmp_path / "imgs", 2)
    with pytest.raises(UnknownNameError, match="unknown executor 'spark'; valid: local, ray"):
        index_images(IndexConfig(inputs=[tmp_path / "imgs"], root=tmp_path / "ix", executor="spark"))
    assert not (tmp_path / "ix").exists()


class _FakeRay:
    """Just ``cluster_resources()``: the Ray executor's resource plan needs nothing else."""

    def __init__(self, **res):
        self.res = res

    def cluster_resources(self):
        return self.res


@pytest.mark.parametrize("res, device, actors, expect", [
    # 2 GPU nodes of 8 GPUs and 64 cores: one actor per GPU, 7 cores each (one left for the driver) -> 6 decoders
    ({"CPU": 128, "GPU": 16}, "auto", None, (16, 7, 1, "cuda", 6)),
    ({"CPU": 128, "GPU": 16}, "cpu", None, (128, 1, 0, "cpu", 0)),      # --device cpu ignores the GPUs
    ({"CPU": 2}, "auto", None, (2, 1, 0, "cpu", 0)),                    # no GPU: one single-threaded actor per CPU
    ({"CPU": 2}, "auto", 1, (1, 1, 0, "cpu", 0)),
])
def test_ray_resource_plan(res, device, actors, expect):
    from zslretrieval.distributed.ray_executor import RayExecutor

    p = RayExecutor(actors=actors)._plan(_FakeRay(**res), EncodeOptions(device=device))
    assert (p.actors, p.num_cpus, p.num_gpus, p.device, p.workers) == expect


def test_ray_resource_plan_refusals():
    from zslretrieval.distributed.ray_executor import RayExecutor
    from zslretrieval.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="'cuda' but the Ray cluster has no GPU"):
        RayExecutor()._plan(_FakeRay(CPU=4), EncodeOptions(device="cuda"))
    with pytest.raises(InvalidInputError, match="3 Ray actor.* do not fit the cluster \\(8 CPU, 2 GPU\\)"):
        RayExecutor(actors=3)._plan(_FakeRay(CPU=8, GPU=2), EncodeOptions(device="auto"))
    with pytest.raises(InvalidInputError, match="--ray-actors 0"):
        RayExecutor(actors=0)
