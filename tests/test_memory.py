"""memory.py: freed tensor memory stays in the process (no page faults per batch), opt-out, provenance."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from mmix_eval import memory
from mmix_eval.provenance import hardware

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")

# Ten forward passes of a CIFAR net's first stage over a 500-image batch (activations of 64 MB each) after
# three warm-up passes, counting minor page faults: each one is a page the kernel had to map and zero again.
PROBE = """
import json, resource
from mmix_eval import memory
how = memory.apply()
import torch
import torch.nn.functional as F
x, w1, w2 = torch.rand(500, 3, 32, 32), torch.rand(32, 3, 3, 3), torch.rand(32, 32, 3, 3)
def forward():
    with torch.inference_mode():
        return F.conv2d(F.relu(F.conv2d(x, w1, padding=1)), w2, padding=1).sum()
for _ in range(3):
    forward()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    forward()
print(json.dumps({"how": how, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def probe(**env) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@glibc
def test_freed_tensor_memory_is_reused_instead_of_faulted_back_in():
    system = probe(MMIX_EVAL_MALLOC="system")
    assert system["how"] == "glibc defaults (MMIX_EVAL_MALLOC=system)"
    pages = 10 * 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")  # one 64 MB activation per pass
    assert system["faults"] >= pages  # glibc's default: each pass's activations mapped and zeroed again
    # kept: the warm-up's pages serve every later pass. On this VM the kernel's own reclaim (kdamond) sometimes takes
    # idle pages back from any process, which glibc's setting cannot prevent: one or two of the ten passes then
    # fault their 64 MB back in (measured 0, 16,000 or 32,000 faults from run to run, the setting unchanged; in two
    # CI runs under the slow lane's load, 16,000-32,000 in 8 fresh processes of 8). So the fewest faults of up to 3
    # fresh processes must stay below a quarter of one fault per page per pass: glibc's defaults fault every page
    # of every pass (the assertion above), four times that.
    kept = [probe() for _ in range(1)]
    while kept[-1]["faults"] > 0.01 * pages and len(kept) < 3:
        kept.append(probe())
    assert kept[0]["how"] == "glibc, freed memory kept (mmap off, trim 2 GiB)"
    assert min(k["faults"] for k in kept) <= 0.25 * pages, [k["faults"] for k in kept]


@glibc
def test_applied_once_and_recorded_in_provenance():
    first = memory.apply()  # the test suite applied it at start, as the command line does
    assert memory.apply() == first == memory.state() == "glibc, freed memory kept (mmap off, trim 2 GiB)"
    assert hardware("cpu")["malloc"] == first
