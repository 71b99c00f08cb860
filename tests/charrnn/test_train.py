from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from charrnn.config import TrainConfig
from charrnn.corpus import from_text
from charrnn.metrics import unigram_entropy_bits
from charrnn.train import evaluate_bpc, train
from charrnn.model import CharRNN, ModelConfig

TINY = dict(embedding_dim=16, hidden_size=48, num_layers=1, cell="gru", seq_len=32, batch_size=8, lr=1e-2,
            evals_per_trial=8, val_chars=0, sample_chars=40, final_sample_chars=60)


def test_short_run_beats_the_unigram_entropy_of_its_text(tiny_text):
    corpus = from_text(tiny_text)
    records = []
    result = train(TrainConfig(budget_chars=60_000, **TINY), corpus.train, corpus.val, corpus.vocab,
                   report=records.append)
    unigram = unigram_entropy_bits(corpus.val, len(corpus.vocab))
    assert result.status == "completed"
    assert result.best_val_bpc < unigram - 0.5, (result.best_val_bpc, unigram)
    assert len(records) == 8 and records[-1].done and not records[0].done
    assert [r.chars_seen for r in records] == sorted(r.chars_seen for r in records)
    assert all(len(r.sample) == 40 for r in records)
    assert set(records[-1].final_samples) == {0.5, 0.8}
    assert records[-1].train_bpc < records[0].train_bpc


def test_exploding_loss_ends_as_diverged_without_raising(tiny_text):
    corpus = from_text(tiny_text)
    records = []
    cfg = TrainConfig(budget_chars=60_000, **{**TINY, "cell": "rnn_relu", "optimizer": "sgd", "lr": 50.0,
                                                 "grad_clip": 0.0})
    result = train(cfg, corpus.train, corpus.val, corpus.vocab, report=records.append)
    assert result.status == "diverged"
    assert records[-1].diverged and records[-1].done and math.isnan(records[-1].val_bpc)
    assert result.chars_seen < 60_000


def test_evaluation_is_exact_cross_entropy_on_short_text(tiny_text):
    corpus = from_text(tiny_text)
    model = CharRNN(ModelConfig(vocab_size=len(corpus.vocab), embedding_dim=4, hidden_size=8, num_layers=1))
    ids = torch.as_tensor(corpus.val[:65]).long()
    bpc = evaluate_bpc(model, ids)
    # An untrained model is close to uniform over the vocabulary.
    assert abs(bpc - math.log2(len(corpus.vocab))) < 0.5


def _crash_after(n: int):
    """A report callback that records, then crashes at the `n`th report (the checkpoint of that one is written)."""
    seen = []

    def report(record):
        seen.append(record)
        if len(seen) == n:
            raise KeyboardInterrupt

    return seen, report


def test_resume_continues_the_schedule_and_is_deterministic(tiny_text, tmp_path):
    corpus = from_text(tiny_text)
    cfg = TrainConfig(budget_chars=40_000, **{**TINY, "lr_schedule": "cosine"})
    full = train(cfg, corpus.train, corpus.val, corpus.vocab)
    seen, crash_at_half = _crash_after(4)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, corpus.train, corpus.val, corpus.vocab, report=crash_at_half, checkpoint_dir=tmp_path)
    assert [r.val_bpc for r in seen] == [r.val_bpc for r in full.records[:4]]
    resumed, again = [], []
    result = train(cfg, corpus.train, corpus.val, corpus.vocab, report=resumed.append, resume_from=tmp_path)
    train(cfg, corpus.train, corpus.val, corpus.vocab, report=again.append, resume_from=tmp_path)
    # The same evaluation points and lr schedule as the run that never stopped; the same records from one checkpoint.
    assert [(r.chars_seen, r.lr) for r in resumed] == [(r.chars_seen, r.lr) for r in full.records[4:]]
    assert [(r.val_bpc, r.sample) for r in resumed] == [(r.val_bpc, r.sample) for r in again]
    # ... and the same scores and samples as the run that never stopped: a resume is exact.
    assert [(r.val_bpc, r.sample) for r in resumed] == [(r.val_bpc, r.sample) for r in full.records[4:]]
    assert result.chars_seen == full.chars_seen and result.best_val_bpc <= min(r.val_bpc for r in resumed)
    # The wall time carries over the crash.
    assert resumed[0].wall_s > seen[-1].wall_s


def test_checkpoint_files_match_each_report_and_round_trip(tiny_text, tmp_path):
    from charrnn.checkpoint import MODEL_FILE, STATE_FILE, load_model
    from charrnn.train import load_checkpoint, make_optimizer

    corpus = from_text(tiny_text)
    cfg = TrainConfig(budget_chars=20_000, **TINY)
    on_disk = []

    def read_checkpoint(record):
        state = torch.load(tmp_path / STATE_FILE, weights_only=True)
        on_disk.append((state["chars_seen"], torch.load(tmp_path / MODEL_FILE, weights_only=True)["val_bpc"]))

    result = train(cfg, corpus.train, corpus.val, corpus.vocab, report=read_checkpoint, checkpoint_dir=tmp_path)
    records = result.records
    assert on_disk == [(r.chars_seen, r.best_val_bpc) for r in records]
    # state.pt restores the model, the optimizer and the trainer's progress; model.pt holds the best weights.
    model = CharRNN(cfg.model_config(len(corpus.vocab)))
    optimizer = make_optimizer(model, cfg)
    state, best = load_checkpoint(tmp_path, model, optimizer, torch.device("cpu"))
    assert (state.chars_seen, state.best_val_bpc, state.budget_chars) == (records[-1].chars_seen,
                                                                          records[-1].best_val_bpc, 20_000)
    assert optimizer.state_dict()["state"]
    sampler, vocab, payload = load_model(tmp_path)
    assert vocab.chars == corpus.vocab.chars and payload["chars_seen"] == state.best_chars_seen
    assert all(torch.equal(v, best[k]) for k, v in sampler.state_dict().items())


def test_too_little_training_text_is_an_error(tiny_text):
    corpus = from_text(tiny_text)
    with pytest.raises(ValueError, match="too short"):
        train(TrainConfig(budget_chars=1000, train_chars=100, **TINY), corpus.train, corpus.val, corpus.vocab)


def test_config_from_flat_rejects_unknown_keys_and_normalises_types():
    import numpy as np

    cfg = TrainConfig.from_flat({"hidden_size": np.int64(64), "lr": np.float32(0.01), "cell": np.str_("lstm")})
    assert type(cfg.hidden_size) is int and type(cfg.lr) is float and cfg.cell == "lstm"
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_flat({"hiden_size": 64})
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig.from_flat({"optimizer": "adagrad"})


def test_bf16_autocast_trains_as_well(tiny_text):
    corpus = from_text(tiny_text)
    cfg = TrainConfig(budget_chars=30_000, precision="bf16", **TINY)
    assert cfg.bf16
    result = train(cfg, corpus.train, corpus.val, corpus.vocab)
    assert result.best_val_bpc < unigram_entropy_bits(corpus.val, len(corpus.vocab)) - 0.5


def test_auto_precision_follows_the_hardware(monkeypatch):
    import charrnn.config as config_module

    monkeypatch.setattr(config_module, "bf16_is_native", lambda device: True)
    assert TrainConfig(precision="auto").bf16
    monkeypatch.setattr(config_module, "bf16_is_native", lambda device: False)
    assert not TrainConfig(precision="auto").bf16
    assert not TrainConfig(precision="fp32").bf16
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")


def test_early_stopping_rule():
    from charrnn.train import is_new_best, should_stop_early

    assert is_new_best(1.9, 2.0, 0.05) and not is_new_best(1.96, 2.0, 0.05)
    assert not is_new_best(float("nan"), 2.0, 0.0)
    assert not should_stop_early(5, 0)  # patience 0 never stops
    assert not should_stop_early(2, 3) and should_stop_early(3, 3)
    assert not should_stop_early(3, 3, chars_seen=400, budget_chars=1000)  # not in the first half of the schedule
    assert should_stop_early(3, 3, chars_seen=500, budget_chars=1000)


def test_time_limit_budget_fits_the_measured_rate():
    from charrnn.train import EVAL_RESERVE, budget_for_time_limit

    # 10k chars/s measured over 10 s, 100 s left of 110: about 1M more characters, less the evaluation reserve.
    got = budget_for_time_limit(50_000_000, 100_000, 10_000.0, 10.0, 110.0, chars_per_step=1000)
    assert got == 100_000 + int(1_000_000 * (1 - EVAL_RESERVE)) // 1000 * 1000
    assert budget_for_time_limit(500_000, 100_000, 10_000.0, 10.0, 110.0, 1000) == 500_000  # never more than asked
    assert budget_for_time_limit(500_000, 100_000, 10_000.0, 200.0, 110.0, 1000) == 101_000  # out of time: one step
    # Once an evaluation has been timed, the evaluations still to come are kept back exactly: 100 s left, 40 s
    # of evaluations, 60 s of training at 10k chars/s.
    assert budget_for_time_limit(50_000_000, 100_000, 10_000.0, 10.0, 110.0, 1000, evals_s=40.0) == 700_000


def test_eval_points_end_at_the_stop_and_listed_points_are_kept():
    cfg = TrainConfig(budget_chars=900, eval_at=(100, 173, 300, 520))
    assert cfg.eval_points() == [100, 173, 300, 520, 900]
    assert TrainConfig(budget_chars=900, eval_at=(100, 173, 300, 520), stop_chars=300).eval_points() == [100, 173, 300]
    assert TrainConfig(budget_chars=1000, evals_per_trial=4).eval_points() == [250, 500, 750, 1000]
    with pytest.raises(ValueError, match="eval_at"):
        TrainConfig(eval_at=(300, 100))


def test_lr_scale_is_relative_to_the_optimizers_usual_rate():
    from charrnn.config import BASE_LR

    assert TrainConfig(optimizer="sgd", lr_scale=0.5).lr == pytest.approx(0.5 * BASE_LR["sgd"])
    flat = TrainConfig.from_flat({"optimizer": "adam", "lr_scale": 2.0}).to_dict()
    assert TrainConfig.from_flat(flat).lr == pytest.approx(2.0 * BASE_LR["adam"])


def test_stop_chars_ends_on_the_budgets_schedule_and_scores_the_test_text_once(tiny_text):
    corpus = from_text(tiny_text)
    records = []
    cfg = TrainConfig(budget_chars=60_000, stop_chars=20_000, **{**TINY, "lr_schedule": "cosine"})
    result = train(cfg, corpus.train, corpus.val, corpus.vocab, report=records.append, test_ids=corpus.test)
    assert 20_000 <= result.chars_seen < 20_000 + 8 * 32
    assert records[-1].done and not records[-1].stopped_early
    # The lr schedule spans the 60k budget: at 20k it has not decayed to its floor.
    assert records[-1].lr > 0.5 * cfg.lr
    assert math.isfinite(result.test_bpc) and result.test_bpc == records[-1].test_bpc
    assert all(math.isnan(r.test_bpc) for r in records[:-1])
    assert math.isnan(train(cfg, corpus.train, corpus.val, corpus.vocab).test_bpc)  # no test text, no score


def test_patience_stops_a_run_that_no_longer_improves(tiny_text):
    corpus = from_text(tiny_text)
    records = []
    # A learning rate of 0 never improves on the first evaluation: stopped after `patience` more, once half the
    # budget is behind (the 4th of 8 evaluations).
    cfg = TrainConfig(budget_chars=60_000, patience=2, **{**TINY, "lr": 1e-12})
    result = train(cfg, corpus.train, corpus.val, corpus.vocab, report=records.append)
    assert len(records) == 4 and records[-1].done and records[-1].stopped_early
    assert result.status == "completed" and result.chars_seen < 60_000
    assert records[-1].final_samples  # the final samples come from the best weights as usual


def test_time_limit_shrinks_the_budget_and_ends_in_time(tiny_text):
    corpus = from_text(tiny_text)
    records = []
    cfg = TrainConfig(budget_chars=50_000_000, time_limit_s=4.0, **TINY)
    result = train(cfg, corpus.train, corpus.val, corpus.vocab, report=records.append)
    assert result.status == "completed" and result.budget_chars < 50_000_000
    assert result.chars_seen >= result.budget_chars
    # Fitted at warm-up, then after every evaluation at the recent pace (up or down); the step that reaches the
    # limit is the last.
    assert 2 <= len(records) <= 2 * cfg.evals_per_trial + 1  # the points move with each refit
    assert result.wall_s < 4.0 + 2.0


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_a_damaged_state_file_is_one_clear_error(tiny_text, tmp_path, damage):
    from charrnn.checkpoint import STATE_FILE
    from charrnn.train import CheckpointError

    corpus = from_text(tiny_text)
    cfg = TrainConfig(budget_chars=20_000, **TINY)
    train(cfg, corpus.train, corpus.val, corpus.vocab, checkpoint_dir=tmp_path)
    path = tmp_path / STATE_FILE
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint" * 100)
    else:
        path.unlink()
    with pytest.raises(CheckpointError, match="cannot resume from .*state.pt"):
        train(cfg, corpus.train, corpus.val, corpus.vocab, resume_from=tmp_path)


def test_a_resume_from_the_final_checkpoint_reports_the_last_evaluation_again(tiny_text, tmp_path):
    corpus = from_text(tiny_text)
    cfg = TrainConfig(budget_chars=20_000, **TINY)
    first = train(cfg, corpus.train, corpus.val, corpus.vocab, checkpoint_dir=tmp_path, test_ids=corpus.test)
    again = train(cfg, corpus.train, corpus.val, corpus.vocab, resume_from=tmp_path, test_ids=corpus.test)
    [record] = again.records
    assert record.done and record.chars_seen == first.chars_seen == again.chars_seen
    assert record.final_samples == first.records[-1].final_samples and again.test_bpc == first.test_bpc


def test_best_so_far_and_early_stopping_count():
    from charrnn.train import TrainState

    state = TrainState(budget_chars=1000, chars_seen=100)
    assert state.add_evaluation(2.0, min_delta=0.1) and state.best_chars_seen == 100
    state.chars_seen = 200
    # A new best by less than min_delta: the best moves, but it does not reset the early-stopping count.
    assert state.add_evaluation(1.95, min_delta=0.1) and state.evals_since_best == 1
    assert not state.add_evaluation(float("nan"), min_delta=0.1) and state.evals_since_best == 2
    assert (state.best_val_bpc, state.best_chars_seen) == (1.95, 200)


def test_time_limit_is_fitted_at_warm_up_then_after_every_evaluation_then_cut():
    from charrnn.train import EVAL_RESERVE, TrainState, fit_time_limit, next_eval_after

    cfg = TrainConfig(budget_chars=10_000_000, time_limit_s=100.0, evals_per_trial=10)
    state = TrainState(budget_chars=cfg.budget_chars, chars_seen=50_000)
    # Warm-up: 12.5 s (an eighth of the limit) of training at 4k chars/s, 87.5 s left.
    assert fit_time_limit(cfg, state, 12.0, 4000.0, 10.0, 40_000, 1000) is None
    assert (fit_time_limit(cfg, state, 12.5, 4000.0, 12.5, 50_000, 1000)
            == 50_000 + int(4000 * 87.5 * (1 - EVAL_RESERVE)))
    # Fitted once: refitted after each evaluation, at the recent pace, keeping back every evaluation to come.
    state.budget_fits, state.budget_chars = 1, 400_000
    assert fit_time_limit(cfg, state, 20.0, 4000.0, 20.0, 80_000, 1000) is None  # not right after an evaluation
    state.last_eval_s = 1.0
    evals_left = sum(p > 50_000 for p in cfg.eval_points(400_000)) + 1
    assert (fit_time_limit(cfg, state, 20.0, 4000.0, 20.0, 80_000, 1000, after_eval=True)
            == 50_000 + 4000 * (80 - evals_left))
    # The pace doubled (the machine got quieter): the budget grows, up to what was asked.
    state.budget_fits = 2
    assert (fit_time_limit(cfg, state, 20.0, 8000.0, 20.0, 80_000, 1000, after_eval=True)
            == 50_000 + 8000 * (80 - evals_left))
    # Between evaluations: unchanged until the next evaluation would overrun the limit, then this step is the last.
    assert fit_time_limit(cfg, state, 98.0, 4000.0, 90.0, 360_000, 1000) is None
    assert fit_time_limit(cfg, state, 99.0, 4000.0, 90.0, 360_000, 1000) == 50_000
    assert next_eval_after(cfg, 400_000, 50_000 - 1) == 80_000 and next_eval_after(cfg, 400_000, 400_000) == 400_000
    # A refit after the evaluation at 81k moves the grid to 41k steps: its point at 82k would be one step behind the
    # evaluation just made, so the next one is at least half a spacing on.
    assert next_eval_after(cfg, 410_000, 81_000 - 1, last_eval=81_000) == 123_000
    assert next_eval_after(cfg, 410_000, 400_000, last_eval=400_000) == 410_000  # the end is always an evaluation


def test_warm_start_is_never_handed_back_worse_than_its_weights(tiny_text, tmp_path):
    """A final model that starts from a search trial's weights: those weights are scored first and count as the
    best so far, so even a run that only gets worse (a learning rate that wrecks the model) hands them back."""
    from charrnn.checkpoint import load_model

    corpus = from_text(tiny_text)
    first = train(TrainConfig(budget_chars=30_000, **TINY), corpus.train, corpus.val, corpus.vocab,
                  checkpoint_dir=tmp_path)
    weights = load_model(tmp_path)[0].state_dict()  # the trial's best weights, as the driver reads its model.pt
    records = []
    wreck = TrainConfig(budget_chars=30_000, **{**TINY, "lr": 5.0, "grad_clip": 0.0})
    result = train(wreck, corpus.train, corpus.val, corpus.vocab, report=records.append, init_weights=weights)
    assert result.best_val_bpc <= first.best_val_bpc + 1e-6
    assert all(r.steps == r.chars_seen // (wreck.batch_size * wreck.seq_len) for r in records)


def test_step_chars_sets_the_batch_from_the_sequence_length():
    assert TrainConfig(step_chars=800, seq_len=25).batch_size == 32
    assert TrainConfig(step_chars=800, seq_len=200).batch_size == 4
    assert TrainConfig(step_chars=10, seq_len=200).batch_size == 1


def test_a_validation_score_worse_than_a_uniform_guess_ends_as_diverged(tiny_text):
    # A model trained on the text and scored on one character it almost never saw scores far worse than a uniform
    # guess, though its training loss is fine: that is not a result to compare with others.
    corpus = from_text(tiny_text)
    rare = int(np.bincount(corpus.train, minlength=len(corpus.vocab)).argmin())
    val = np.full(2_000, rare, dtype=corpus.val.dtype)
    records = []
    result = train(TrainConfig(budget_chars=30_000, **TINY), corpus.train, val, corpus.vocab, report=records.append)
    assert result.status == "diverged"
    assert records[-1].diverged and records[-1].done and math.isnan(records[-1].val_bpc)
    assert all(not r.diverged for r in records[:-1])


def test_a_useless_first_evaluation_is_never_recorded_as_the_best(tiny_text):
    # Scored on a character it almost never saw, the model's first evaluation is worse than useless: the run
    # ends as diverged with no best score (inf before any evaluation; the study reports a diverged trial's NaN).
    corpus = from_text(tiny_text)
    rare = int(np.bincount(corpus.train, minlength=len(corpus.vocab)).argmin())
    val = np.full(2_000, rare, dtype=corpus.val.dtype)
    records = []
    result = train(TrainConfig(budget_chars=30_000, **TINY), corpus.train, val, corpus.vocab, report=records.append)
    assert len(records) == 1 and records[0].diverged and not records[0].is_best
    assert not math.isfinite(records[0].best_val_bpc) and not math.isfinite(result.best_val_bpc)
    assert result.status == "diverged" and result.best_chars_seen == 0


def test_a_useless_evaluation_keeps_the_earlier_best_and_its_weights(tiny_text, tmp_path, monkeypatch):
    import sys

    from charrnn.checkpoint import MODEL_FILE, load_model

    module = sys.modules["charrnn.train"]
    real, scores = module.evaluate, iter([None, 99.0])  # the real first score, then a useless one

    def scripted(*args):
        val_bpc, text = real(*args)
        score = next(scores)
        return (val_bpc if score is None else score), text

    monkeypatch.setattr(module, "evaluate", scripted)
    corpus = from_text(tiny_text)
    records = []
    result = train(TrainConfig(budget_chars=30_000, **TINY), corpus.train, corpus.val, corpus.vocab,
                   report=records.append, checkpoint_dir=tmp_path)
    first, last = records
    assert first.is_best and not first.diverged
    assert last.diverged and last.done and not last.is_best and math.isnan(last.val_bpc) and not last.final_samples
    assert last.best_val_bpc == result.best_val_bpc == first.val_bpc
    assert result.best_chars_seen == first.chars_seen and result.status == "diverged"
    best, _, _ = load_model(tmp_path / MODEL_FILE)  # the best weights are still the first evaluation's
    assert evaluate_bpc(best, torch.from_numpy(np.array(corpus.val))) == pytest.approx(first.val_bpc, abs=1e-5)
