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


def test_a_pickled_writer_carries_neither_the_corpus_index_nor_the_rows(tmp_path):
    """Tune pickles its callbacks into tuner.pkl: the writer goes as where its tables are (issue: 20 MB of
    20-gram hashes in every tuner.pkl)."""
    import pickle

    import numpy as np

    from study.results import ResultsWriter
    from study.rundir import TextIndex

    index = TextIndex({"holmes"}, np.arange(2_000_000, dtype=np.uint64), lambda text: np.zeros(len(text)))
    writer = ResultsWriter(tmp_path, ["lr"], index)
    writer.table.start("t1", {"lr": 0.1})
    writer.write()
    blob = pickle.dumps(writer)
    assert len(blob) < 4_000, len(blob)
    again = pickle.loads(blob)
    assert again.run_dir.path == tmp_path and again.table.search_params == ["lr"]
    assert list(again.table.trials) == ["t1"] and again.table.text_index is None


def test_retention_deletes_every_trial_checkpoint_and_nothing_else(tmp_path):
    from study.results import delete_trial_checkpoints

    keep = [tmp_path / "tune" / "experiment_state-x.json", tmp_path / "tune" / "trial_a" / "result.json",
            tmp_path / "tune-final" / "trial_f" / "error.txt", tmp_path / "final_model.pt",
            tmp_path / "other" / "trial_b" / "checkpoint_000001" / "model.pt",
            tmp_path / "tune" / "trial_of_another_study" / "checkpoint_000001" / "model.pt"]
    gone = [tmp_path / "tune" / "trial_a" / "checkpoint_000003" / "model.pt",
            tmp_path / "tune-repeats-2" / "trial_r" / "checkpoint_000000" / "state.pt",
            tmp_path / "tune-final" / "trial_f" / "checkpoint_000011" / "model.pt"]
    for path in keep + gone:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert delete_trial_checkpoints(str(tmp_path), {"a", "r", "f", "b"}) == 3
    assert all(p.exists() for p in keep) and not any(p.parent.exists() for p in gone)
    assert delete_trial_checkpoints(str(tmp_path / "no-such-storage"), {"a"}) == 0
