"""Who decodes and encodes images for ``zslr index``: executors by name (``--executor``).

    local  this process: the streaming CPU/GPU pipeline (default)
    ray    a pool of Ray actors, local or on a cluster (``pip install 'zslretrieval[ray]'``)

Both yield the same partitions of the path list in input order, and the index writer commits
each one in a single catalog transaction (see ``base``). Ray is imported only when the ``ray``
executor runs.
"""
from __future__ import annotations

from ..registry import Registry
from .base import EncodedPartition, EncodeOptions, Executor, WorkerLostError


def _local(**_):
    from .local import LocalExecutor

    return LocalExecutor()


def _ray(address: str | None = None, actors: int | None = None, log=None, **kw):
    from .ray_executor import RayExecutor, import_ray

    import_ray()  # fail before anything is written when Ray is not installed
    return RayExecutor(address=address, actors=actors, log=log, **kw)


EXECUTORS: Registry = Registry("executor")
EXECUTORS.add("local", _local)
EXECUTORS.add("ray", _ray)


def list_executors() -> list[str]:
    return EXECUTORS.names()


def make_executor(name: str = "local", **kwargs) -> Executor:
    """An executor by name; kwargs the ones it takes (ray: ``address``, ``actors``, ``max_restarts``, ``log``)."""
    return EXECUTORS.get(name or "local")(**kwargs)


__all__ = ["EXECUTORS", "EncodeOptions", "EncodedPartition", "Executor", "WorkerLostError", "list_executors",
           "make_executor"]
