"""``tiny-crash``: the ``tiny-test`` backbone, whose process kills itself (SIGKILL) once.

Its "weights" argument is a marker file: the first process that runs its ``CRASH_AT``-th forward
pass while the marker exists deletes it and SIGKILLs itself -- a Ray worker dying mid-partition,
exactly once however many workers there are. Without a marker it never crashes. The weights id
is that of ``tiny-test`` either way, so indexes built with and without a marker are compatible.
"""
from __future__ import annotations

import os
import signal

from tests.index.fakes import _tiny
from zslretrieval.features.backbones import BACKBONES, Backbone

# The 5th forward is the first of the third partition (test_ray: chunks of 8 images, forwards of 4).
# The driver submits that partition only after it has received and committed the first one (two
# partitions in flight per actor), so at least one partition is committed before the crash whatever
# the timing. A crash in the second partition raced the first one's reply: SIGKILL can land before
# Ray has sent it, and Ray then fails both (seen under load: 0 committed).
CRASH_AT = 5


class _CrashingBackbone(Backbone):
    def __init__(self, marker: str | None):
        b = _tiny()
        super().__init__("tiny-crash", b.net, b.dim, b.preprocess, b.weights_id)
        self.marker, self.calls = marker, 0

    def forward(self, batch):
        self.calls += 1
        if self.marker and self.calls >= CRASH_AT:
            try:
                os.unlink(self.marker)
            except FileNotFoundError:
                pass          # another worker crashed already (or none is wanted)
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(batch)

    __call__ = forward


def _tiny_crash(weights=None, device="cpu") -> Backbone:
    return _CrashingBackbone(None if weights is None else str(weights))


if "tiny-crash" not in BACKBONES:
    BACKBONES.add("tiny-crash", _tiny_crash)
