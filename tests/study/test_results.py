from __future__ import annotations

import pandas as pd

from study.results import atomic_write_parquet, summarize_error

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


def test_parquet_writes_are_atomic(tmp_path):
    path = tmp_path / "t.parquet"
    atomic_write_parquet(path, pd.DataFrame({"a": [1, 2]}))
    atomic_write_parquet(path, pd.DataFrame({"a": [3]}))
    assert pd.read_parquet(path)["a"].tolist() == [3]
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]  # no temporary files left behind
