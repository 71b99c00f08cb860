from __future__ import annotations

import pytest
import torch

from benchmarks.overhead import Timeline, _overlap, main


def _timeline(windows):
    t = Timeline()
    for k, (a, b) in enumerate(windows):
        t.order.append(str(k))
        t.results[str(k)] = [(a, {}), (b, {})]
    return t


def test_overlap_is_the_share_of_the_shortest_window_all_trials_ran():
    assert _overlap(_timeline([(0, 10), (5, 15)])) == pytest.approx(0.5)
    assert _overlap(_timeline([(0, 10), (2, 6), (4, 20)])) == pytest.approx(0.5)  # all three: 4..6 of 2..6
    assert _overlap(_timeline([(0, 1), (2, 3)])) == 0.0


@pytest.mark.parametrize("argv, message", [
    (["--gpu-share", "0"], "--gpu-share must be >= 1"),
    pytest.param(["--gpu-share", "4", "--corpus", __file__], "no CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
])
def test_gpu_share_bad_input_is_one_line_and_status_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
