"""The Tune adapter's own logic: naming why a trial failed."""
from __future__ import annotations

from study.results import summarize_error

TRACEBACK = """Failure # 1 (occurred at 2026-11-24_19-00-00)
ray::ImplicitFunc.train() (pid=1, ip=10.0.0.1, actor_id=ab)
  File "/x/charrnn/train.py", line 250, in train
    loss.backward()
{inner}
"""


def test_error_summary_names_the_innermost_exception():
    text = TRACEBACK.format(inner="study.trainable.InjectedFailure: injected failure after report 2")
    assert summarize_error(text) == "study.trainable.InjectedFailure: injected failure after report 2"
    assert summarize_error("") == "unknown error"


def test_cuda_out_of_memory_is_named_as_such():
    text = TRACEBACK.format(inner="torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert summarize_error(text).startswith("CUDA out of memory: torch.OutOfMemoryError")


def test_a_worker_that_died_is_named_as_such_not_by_its_ip_line():
    text = """Failure # 1 (occurred at 2026-11-26_04-53-06)
The actor died unexpectedly before finishing this task.
\tclass_name: ImplicitFunc
\tpid: 7805
\tip: 192.0.2.2
The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR
"""
    assert summarize_error(text) == "the trial's worker process (pid 7805) died: killed, out of memory, or crashed"
