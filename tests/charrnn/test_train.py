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


def test_time_limit_decides_the_budget_once_and_ends_in_time(tiny_text):
    corpus = from_text(tiny_text)
    records = []
    cfg = TrainConfig(budget_chars=50_000_000, time_limit_s=4.0, **TINY)
    result = train(cfg, corpus.train, corpus.val, corpus.vocab, report=records.append)
    assert result.status == "completed" and result.budget_chars < 50_000_000
    assert result.chars_seen >= result.budget_chars
    # Decided at warm-up (half a second here) in whole steps, the same in every record; moved since only by the one
    # extension, the one cut and the stop at the limit (a machine that speeds up or slows down makes them).
    decision = result.budget_decision
    assert decision.budget_chars % (cfg.batch_size * cfg.seq_len) == 0
    assert decision.chars_per_s == decision.measured_chars_per_s and not decision.given
    assert {(r.budget_decision.budget_chars, r.budget_decision.chars_per_s) for r in records} == {
        (decision.budget_chars, decision.chars_per_s)}
    budgets = [r.budget_chars for r in records]
    moved = {m.to_chars for m in (decision.refit, decision.extended) if m is not None}
    assert set(budgets) <= {decision.budget_chars, *moved, *([decision.stopped_at] if decision.stopped_at else [])}
    assert sum(a != b for a, b in zip(budgets, budgets[1:])) <= 3
    assert 2 <= len(records) <= 2 * cfg.evals_per_trial + 1  # the points move with a cut, if a busy machine makes one
    assert result.wall_s < 4.0 + 2.0


def test_a_given_budget_decision_trains_as_the_fixed_budget_does(tiny_text):
    """A replayed plan's decision (`decided_chars_per_s`) under a generous limit: the same model, bit for bit, as
    the budget given in characters with no time limit."""
    corpus = from_text(tiny_text)
    fixed = TrainConfig(budget_chars=20_000, **{**TINY, "lr_schedule": "cosine"})
    given = TrainConfig(budget_chars=20_000, time_limit_s=600.0, decided_chars_per_s=4096.0,
                        **{**TINY, "lr_schedule": "cosine"})
    a = train(fixed, corpus.train, corpus.val, corpus.vocab, test_ids=corpus.test)
    b = train(given, corpus.train, corpus.val, corpus.vocab, test_ids=corpus.test)
    assert [(r.chars_seen, r.val_bpc, r.sample) for r in a.records] == [(r.chars_seen, r.val_bpc, r.sample)
                                                                        for r in b.records]
    assert a.test_bpc == b.test_bpc and a.budget_decision is None
    assert (b.budget_decision.budget_chars, b.budget_decision.given, b.budget_decision.refit) == (20_000, True, None)


def test_a_run_that_decides_its_budget_trains_as_one_given_that_budget(tiny_text):
    """The warm-up only measures: once it has decided, the run starts over from its initial weights, data order and
    model to beat, so it trains bit for bit as a run given the same budget (a replayed or remembered one)."""
    corpus = from_text(tiny_text)
    terms = {**TINY, "lr_schedule": "cosine", "dropout": 0.1}
    from charrnn.model import CharRNN

    torch.manual_seed(123)  # a model to beat, as the final stage hands its search trial's weights
    weights = CharRNN(TrainConfig(**terms).model_config(len(corpus.vocab))).state_dict()
    decides = TrainConfig(budget_chars=50_000_000, time_limit_s=4.0, **terms)
    a = train(decides, corpus.train, corpus.val, corpus.vocab, test_ids=corpus.test, init_weights=weights)
    decision = a.budget_decision
    assert decision.warmup_chars > 0 and not decision.given and decision.budget_chars < 50_000_000
    given = TrainConfig(budget_chars=decision.budget_chars, time_limit_s=600.0,
                        decided_chars_per_s=decision.chars_per_s, **terms)
    b = train(given, corpus.train, corpus.val, corpus.vocab, test_ids=corpus.test, init_weights=weights)
    records = lambda r: [(x.chars_seen, x.val_bpc, x.sample) for x in r.records]  # noqa: E731
    # The first evaluation comes before any move; a busy machine may cut the deciding run's budget after it, a quiet
    # one extend it.
    assert records(a)[0] == records(b)[0]
    if decision.refit is None and decision.extended is None and not decision.stopped_at:
        assert records(a) == records(b) and a.test_bpc == b.test_bpc
    assert a.wall_s < 4.0 + 2.0


def test_a_resume_under_a_time_limit_keeps_the_decision(tiny_text, tmp_path):
    corpus = from_text(tiny_text)
    cfg = TrainConfig(budget_chars=50_000_000, time_limit_s=3.0, **TINY)
    seen, crash = _crash_after(2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, corpus.train, corpus.val, corpus.vocab, report=crash, checkpoint_dir=tmp_path)
    decided = seen[-1].budget_decision
    resumed = train(cfg, corpus.train, corpus.val, corpus.vocab, resume_from=tmp_path)
    assert (resumed.budget_decision.budget_chars, resumed.budget_decision.chars_per_s) == (decided.budget_chars,
                                                                                           decided.chars_per_s)
    assert resumed.chars_seen >= resumed.budget_chars
    assert resumed.budget_chars <= resumed.budget_decision.moved_chars  # as decided, or as a cut or extension left it


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


def test_the_next_evaluation_follows_a_budget_that_moves():
    from charrnn.train import next_eval_after

    cfg = TrainConfig(budget_chars=10_000_000, time_limit_s=100.0, evals_per_trial=10)
    assert next_eval_after(cfg, 400_000, 50_000 - 1) == 80_000 and next_eval_after(cfg, 400_000, 400_000) == 400_000
    # A cut after the evaluation at 81k moves the grid to 41k steps: its point at 82k would be one step behind the
    # evaluation just made, so the next one is at least half a spacing on.
    assert next_eval_after(cfg, 410_000, 81_000 - 1, last_eval=81_000) == 123_000
    assert next_eval_after(cfg, 410_000, 400_000, last_eval=400_000) == 410_000  # the end is always an evaluation


def test_a_run_whose_best_is_no_better_than_a_uniform_guess_ends_as_diverged(tiny_text, monkeypatch):
    """The default study once kept a "valid" trial at 7.02 bits/char, above a uniform guess (6.63 there): a run
    that ends without ever scoring below log2(vocabulary) learned nothing."""
    import sys

    module = sys.modules["charrnn.train"]
    corpus = from_text(tiny_text)
    uniform = math.log2(len(corpus.vocab))
    real, scores = module.evaluate, iter([uniform + 0.2, uniform + 0.1, uniform + 0.3])

    def scripted(*args):
        _, text = real(*args)
        return next(scores), text

    monkeypatch.setattr(module, "evaluate", scripted)
    records = []
    result = train(TrainConfig(budget_chars=30_000, evals_per_trial=3, **{k: v for k, v in TINY.items()
                                                                           if k != "evals_per_trial"}),
                   corpus.train, corpus.val, corpus.vocab, report=records.append)
    assert [r.diverged for r in records] == [False] * (len(records) - 1) + [True]
    assert result.status == "diverged" and math.isfinite(records[-1].val_bpc) and not records[-1].final_samples
    assert result.best_val_bpc == pytest.approx(uniform + 0.1)
