"""The speed the study plans with (`study.timeplan.measure_speed`): the real trainer, timed after its warm-up."""
from __future__ import annotations

from charrnn.config import TrainConfig
from charrnn.corpus import from_text
from charrnn.speed import trainer_throughput
from charrnn.train import EVAL_STREAMS


def test_trainer_throughput_times_about_the_seconds_asked_for(tiny_text):
    corpus = from_text(tiny_text)
    config = TrainConfig(cell="gru", embedding_dim=8, hidden_size=16, num_layers=1, seq_len=10, batch_size=4,
                         threads=1, val_chars=2 * EVAL_STREAMS + 1, sample_chars=1, final_temperatures=())
    chars, seconds = trainer_throughput(config, corpus, 0.2)
    assert seconds >= 0.2 and chars > 0 and chars % (4 * 10) == 0
