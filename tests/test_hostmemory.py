"""keep_freed_host_memory: a training step reuses its freed tensors instead of page-faulting them back in."""

import os
import subprocess
import sys

import pytest

# a tiny causal mixer with an 8000-way head: its (2048, 8000) logits and their gradients are 65 MB each, over
# glibc's largest mmap threshold, as at the benchmark's reference size
PROBE = """
import resource, sys, torch
from memorymodels.hostmemory import keep_freed_host_memory
applied = keep_freed_host_memory() if sys.argv[1] == "keep" else None
from memorymodels.models import LanguageMixer
torch.manual_seed(0)
model = LanguageMixer(8000, 16, 1, 256)
ids = torch.randint(0, 8000, (8, 256))
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
def step():
    loss, _ = model(ids, labels=ids)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
for _ in range(int(sys.argv[2])):  # warm-up
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 10)
"""
LOGITS_PAGES = 2048 * 8000 * 4 // os.sysconf("SC_PAGE_SIZE")


def faults_per_step(mode: str, warmup: int = 3, **env) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
    env = {**clean, "OMP_NUM_THREADS": "1", **env}
    out = subprocess.run([sys.executable, "-c", PROBE, mode, str(warmup)], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_a_training_step_reuses_freed_memory():
    applied, kept = faults_per_step("keep", warmup=50)  # the kept heap grows to its plateau in ~45 steps
    assert applied == "True"
    _, default = faults_per_step("default")
    assert default > 2 * LOGITS_PAGES, "glibc's default maps fresh pages for the logits and their gradients"
    assert kept < LOGITS_PAGES / 2


def test_the_users_own_malloc_settings_win():
    applied, _ = faults_per_step("keep", MALLOC_MMAP_MAX_="65536")
    assert applied == "False"
