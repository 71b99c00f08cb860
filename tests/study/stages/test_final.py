"""The final stage's settings, as the final stage and benchmarks.final build them (one function)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from charrnn.config import TrainConfig
from study.inputs import resolve_spec
from study.stages.final import final_config, final_texts


def test_the_final_config_is_the_spec_s_final_terms_over_the_configuration():
    spec = resolve_spec("sherlock")
    params = {"cell": "gru", "hidden_size": 64, "num_layers": 1, "seq_len": 25, "lr_scale": 1.0, "optimizer": "adam"}
    flat = final_config(spec, params, 1_000_000, 90.0, 7)
    config = TrainConfig.from_flat(flat)  # every key is the trainer's
    final = spec.final
    assert config.train_chars == 0 and config.budget_chars == 1_000_000 and config.time_limit_s == 90.0
    assert config.seed == 7 and config.eval_at == () and config.val_chars == 0
    assert (config.evals_per_trial, config.patience, config.min_delta) == (final["evals"], final["patience"],
                                                                           final["min_delta"])
    assert config.batch_size * config.seq_len == (final["step_chars"] or spec.fixed["step_chars"])
    assert config.lr_schedule == spec.fixed["lr_schedule"] and config.hidden_size == 64


def test_the_final_model_scores_its_share_of_the_validation_text():
    spec = resolve_spec("sherlock")
    corpus = SimpleNamespace(train=np.arange(10), val=np.arange(spec.final["val_chars"] + 5), test=np.arange(3))
    texts = final_texts(spec, corpus)
    assert len(texts["val"]) == spec.final["val_chars"] and texts["train"] is corpus.train
