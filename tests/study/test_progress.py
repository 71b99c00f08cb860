"""The status line's numbers and its two renderings, with a fake clock and no Ray."""
from __future__ import annotations

import io
import math
import pickle

import pytest

from study.progress import ESTIMATING, HEARTBEAT_S, Progress, Tally, format_duration, remaining_s, status_text


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("elapsed, finished, left, expected", [
    (60.0, 0, 10, None),      # no trial finished yet: no honest pace
    (60.0, 2, 8, 240.0),      # 30 s per finished trial
    (60.0, 3, 0, 0.0),        # nothing left
    (0.0, 1, 5, None),
])
def test_remaining_time_is_the_pace_so_far_times_the_trials_left(elapsed, finished, left, expected):
    assert remaining_s(elapsed, finished, left) == expected


def test_a_trial_running_alone_counts_down_the_estimate_instead_of_adding_to_it():
    # One trial finished in 180 s, two left, the next one 60 s in: 300 s, not 360.
    assert remaining_s(240.0, 1, 2, since_finish_s=60.0) == 300.0
    # A trial that runs longer than the pace takes at most one pace off: the estimate does not fall below the rest.
    assert remaining_s(600.0, 1, 2, since_finish_s=420.0) == 180.0
    estimates = [remaining_s(180.0 + t, 1, 2, since_finish_s=t) for t in (0.0, 60.0, 120.0)]
    assert estimates == sorted(estimates, reverse=True)  # it counts down while the pace holds


@pytest.mark.parametrize("seconds, text", [(0, "0:00"), (5.4, "0:05"), (65, "1:05"), (3723, "1:02:03")])
def test_durations(seconds, text):
    assert format_duration(seconds) == text


def test_status_text():
    tally = Tally("search", total=50, done=21, running=2, failed=1, best=2.18694)
    assert status_text(tally, 372, 514) == (
        "21/50 done (1 failed), 2 running | best val_bpc 2.1869 | 6:12 elapsed, about 8:34 left")
    assert status_text(Tally("search", 50, 0, 2), 5, None) == (
        f"0/50 done, 2 running | no val_bpc yet | 0:05 elapsed, {ESTIMATING}")


def test_plain_lines_carry_the_status_and_the_estimate_counts_only_this_drivers_trials():
    out, clock = io.StringIO(), Clock()
    progress = Progress(out, live=False, clock=clock)
    progress.update(Tally("search", 10, done=4, running=1))      # resumed: 4 finished by an earlier driver
    clock.now += 10
    progress.update(Tally("search", 10, done=4, running=2))      # no event, no heartbeat due yet
    clock.now += 20
    progress.update(Tally("search", 10, 4, 1, best=3.5), note="new best val_bpc 3.5000")
    clock.now += 30
    progress.log("trial t1 stopped, val_bpc 3.6000", Tally("search", 10, 5, 0, best=3.5))
    lines = out.getvalue().splitlines()
    assert lines == [
        f"[search 4/10 done, 1 running | no val_bpc yet | 0:00 elapsed, {ESTIMATING}]",  # the stage started
        f"[search 4/10 done, 1 running | best val_bpc 3.5000 | 0:30 elapsed, {ESTIMATING}] new best val_bpc 3.5000",
        "[search 5/10 done, 0 running | best val_bpc 3.5000 | 1:00 elapsed, about 5:00 left] trial t1 stopped, "
        "val_bpc 3.6000",
    ]


def test_a_plain_log_gets_a_heartbeat_while_trials_run():
    out, clock = io.StringIO(), Clock()
    progress = Progress(out, live=False, clock=clock)
    progress.log("started", Tally("search", 4, 0, 2))
    progress.tick()
    clock.now += HEARTBEAT_S + 1
    progress.tick()
    progress.tick()
    assert len(out.getvalue().splitlines()) == 2


def test_a_new_stage_restarts_the_clock():
    out, clock = io.StringIO(), Clock()
    progress = Progress(out, live=False, clock=clock)
    progress.log("a", Tally("search", 2, 1, 0))
    clock.now += 100
    progress.log("b", Tally("repeat", 3, 0, 1))
    assert out.getvalue().splitlines()[-1].startswith("[repeat 0/3 done, 1 running | no val_bpc yet | 0:00 elapsed")


def test_after_a_stage_ends_nothing_redraws_it():
    out, clock = io.StringIO(), Clock()
    progress = Progress(out, live=True, clock=clock)
    progress.update(Tally("search", 4, 3, 1))
    progress.close()
    drawn = out.getvalue()
    clock.now += 100
    progress.tick()
    progress.log("retraining the best configuration")  # between stages: a line, no status
    assert out.getvalue() == drawn + "retraining the best configuration\n"
    progress.update(Tally("repeat", 2, 0, 1))
    assert "repeat" in out.getvalue() and "0:00 elapsed" in out.getvalue().rsplit("repeat", 1)[1]


def test_live_line_is_drawn_by_tqdm_and_messages_go_above_it():
    out, clock = io.StringIO(), Clock()
    progress = Progress(out, live=True, clock=clock)
    progress.update(Tally("search", 4, 0, 1))
    progress.update(Tally("search", 4, 0, 1, best=3.9), note="new best")  # shown in the line, not as a line
    progress.log("trial a completed, val_bpc 3.9000", Tally("search", 4, 1, 1, best=3.9))
    progress.close()
    progress.close()
    text = out.getvalue()
    assert "trial a completed, val_bpc 3.9000\n" in text and "new best" not in text
    assert "1/4 done, 1 running | best val_bpc 3.9000" in text and "\r" in text


def test_progress_pickles_without_its_stream():
    progress = Progress(io.StringIO(), live=True)
    progress.update(Tally("search", 4, 0, 1))
    copy = pickle.loads(pickle.dumps(progress))
    assert copy.live and copy.tally == progress.tally and copy._bar is None
    progress.close()


def test_plain_lines_can_go_to_a_function():
    lines: list[str] = []
    progress = Progress(write=lines.append, clock=Clock())
    progress.log("trial a completed", Tally("search", 2, 1, 0))
    progress.log("between stages")
    assert not progress.live and lines == [
        f"[search 1/2 done, 0 running | no val_bpc yet | 0:00 elapsed, {ESTIMATING}] trial a completed",
        "between stages"]


def test_best_is_inf_until_a_value():
    assert math.isinf(Tally("search", 1, 0, 0).best)
