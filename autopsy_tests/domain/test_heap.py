"""heap.keep_freed_memory: freed batch-sized arrays stay in the process between calls.

Each case runs in a fresh interpreter: malloc's settings are process-wide and cannot be undone.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# a "call" allocates 24 arrays of 2 MB (like a labeling call's columns), then frees them all;
# the page faults of the later calls say whether their memory had been handed back to the OS
_PROBE = """
import resource, sys
import numpy as np
from autopsy_assets.domain import heap
print(heap.keep_freed_memory())
faults = []
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    arrays = [np.ones(262_144) for _ in range(24)]
    del arrays
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(max(faults[2:]))
"""


def _probe(keep: str) -> tuple[str, int]:
    env = dict(os.environ, AUTOPSY_KEEP_FREED_MEMORY=keep)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_freed_pages_are_kept_between_calls():
    kept, faults_kept = _probe("1")
    handed_back, faults_handed_back = _probe("0")
    assert (kept, handed_back) == ("True", "False")
    # 24 x 2 MB = 12,288 pages: handed back, each later call faults them in again
    assert faults_handed_back > 10_000
    assert faults_kept < 500
