"""study.cluster's arithmetic, without a cluster (tests/study/test_cluster.py starts a real one)."""
from __future__ import annotations

import pytest

from study.cluster import TRIALS_PER_GPU, concurrent_trials


@pytest.mark.parametrize("cpus, gpus, per_cpu, per_gpu, max_concurrent, trials, expected", [
    (16, 0, 1.0, 0.0, None, 50, 16),  # as many as the CPUs hold
    (16, 0, 3.0, 0.0, None, 50, 5),
    (16, 0, 1.0, 0.0, 4, 50, 4),  # --max-concurrent
    (16, 0, 1.0, 0.0, None, 3, 3),  # no more than there are trials
    (2, 0, 4.0, 0.0, None, 50, 1),  # at least one, even where a trial asks for more than there is
    (16, 1, 1.0, 1.0 / TRIALS_PER_GPU, None, 50, TRIALS_PER_GPU),  # GPU slots bound it
    (16, 1, 1.0, 0.1, None, 50, 10),  # ten tenths of a GPU are one GPU (1 // 0.1 is 9.0 in floating point)
    (4, 2, 1.0, 0.25, None, 50, 4),  # CPU slots bound it
])
def test_concurrent_trials(cpus, gpus, per_cpu, per_gpu, max_concurrent, trials, expected):
    assert concurrent_trials(cpus, gpus, per_cpu, per_gpu, max_concurrent, trials) == expected
