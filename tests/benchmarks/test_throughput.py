from __future__ import annotations

import json

import pytest

from benchmarks import throughput as bench
from benchmarks.lab_loop import lab_loop_throughput
from charrnn.corpus import Vocab
from charrnn.model import CELLS, ModelConfig, flops_per_char

TINY_FLAGS = ["--hidden-size", "16", "--embedding-dim", "8", "--num-layers", "1", "--seq-len", "10",
              "--batch-size", "4", "--threads", "1"]


def test_training_flops_of_the_lab_model_by_hand():
    config = ModelConfig(vocab_size=99)  # rnn_relu, embedding 100, hidden 512, 3 layers
    forward_macs = 512 * (100 + 512) + 2 * 512 * (512 + 512) + 512 * 99
    assert bench.train_flops_per_char(config) == 3 * 2 * forward_macs == 8_475_648


@pytest.mark.parametrize("cell", CELLS)
def test_forward_matmuls_add_up_to_flops_per_char(cell):
    config = ModelConfig(vocab_size=37, embedding_dim=12, hidden_size=20, num_layers=3, cell=cell)
    shapes = bench.forward_matmuls(config, batch_size=5, seq_len=7)
    assert sum(2 * m * k * n for m, k, n in shapes) == flops_per_char(config) * 5 * 7


def test_peak_shapes_are_the_distinct_model_shapes_and_a_large_square():
    config = ModelConfig(vocab_size=99, cell="lstm", num_layers=2)
    shapes = bench.peak_shapes(config, batch_size=64, seq_len=50, device="cpu")
    assert shapes == [(64, 512, 2048), (3200, 100, 2048), (3200, 512, 99), (3200, 512, 2048), (2048, 2048, 2048)]
    assert bench.shape_label(shapes[0]) == "64x512x2048"


def _result(**overrides) -> bench.BenchResult:
    fields = dict(settings={"cell": "rnn_relu", "embedding_dim": 100, "hidden_size": 512, "num_layers": 3,
                            "seq_len": 50, "batch_size": 64, "device": "cpu", "dtype": "fp32", "threads": 2},
                  vocab_size=99, num_params=1_425_679, train_flops_per_char=8_000_000, chars=100_000,
                  measured_s=10.0, matmul_flops_per_s={"a": 100e9, "b": 160e9}, peak_dtype="fp32",
                  load_avg_1min=0.5, cpu_wait_share=0.0)
    return bench.BenchResult(**{**fields, **overrides})


def test_result_ratios():
    r = _result(baseline_chars=10_000, baseline_measured_s=8.0, baseline_cpu_wait_share=0.0)
    assert r.chars_per_s == 10_000
    assert r.model_flops_per_s == 80e9
    assert r.peak_flops_per_s == 160e9
    assert r.fraction_of_peak == 0.5
    d = r.to_dict()
    assert d["baseline_chars_per_s"] == 1_250 and d["speedup"] == 8.0
    assert d["baseline_model_flops_per_s"] == 10e9
    text = bench.format_text(r)
    assert "10,000 chars/s = 80.0 GFLOP/s" in text and "50% of the matmul peak" in text and "8.0x" in text
    assert "speedup" not in _result().to_dict() and "lab loop" not in bench.format_text(_result())


def test_lab_loop_times_only_the_steps_after_warm_up(tiny_text):
    ids = Vocab.from_text(tiny_text).encode(tiny_text)
    config = ModelConfig(vocab_size=int(ids.max()) + 1, embedding_dim=4, hidden_size=8, num_layers=1)
    chars, seconds = lab_loop_throughput(config, ids, seq_len=10, seconds=0.05, warmup_steps=2)
    assert chars > 0 and chars % 10 == 0 and seconds >= 0.05


@pytest.fixture
def tiny_corpus(tmp_path, tiny_text, monkeypatch):
    # A small square and short matmul bursts: this checks the output, not the machine.
    monkeypatch.setattr(bench, "SQUARE", {"cpu": 64})
    monkeypatch.setattr(bench, "MATMUL_SECONDS", 0.02)
    path = tmp_path / "tiny.txt"
    path.write_text(tiny_text, encoding="utf-8")
    return path


def test_json_output_on_a_tiny_model(tiny_corpus, capsys):
    assert bench.main(["--corpus", str(tiny_corpus), *TINY_FLAGS, "--seconds", "0.5", "--baseline", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("chars_per_s", "model_flops_per_s", "peak_flops_per_s", "fraction_of_peak", "vocab_size",
                "baseline_chars_per_s", "speedup", "matmul_flops_per_s"):
        assert key in out, key
    assert out["chars_per_s"] > 0 and out["measured_s"] >= 0.5
    assert out["vocab_size"] == len(set(tiny_corpus.read_text(encoding="utf-8")))
    assert out["model_flops_per_s"] == pytest.approx(out["chars_per_s"] * out["train_flops_per_char"])
    assert out["peak_flops_per_s"] == max(out["matmul_flops_per_s"].values())
    assert "64x64x64" in out["matmul_flops_per_s"]


@pytest.mark.parametrize("flags", [
    ["--batch-size", "0"],
    ["--seconds", "soon"],
    ["--cell", "transformer"],
    ["--dtype", "fp16"],
    ["--device", "tpu"],
    ["--no-such-flag"],
])
def test_bad_flags_exit_2_with_one_line(flags, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(flags)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_missing_or_too_short_corpus_exits_2_with_one_line(tmp_path, capsys):
    assert bench.main(["--corpus", str(tmp_path / "absent.txt")]) == 2
    short = tmp_path / "short.txt"
    short.write_text("a short text, far too short for a batch of 64 streams of 50 characters\n" * 3)
    assert bench.main(["--corpus", str(short)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "not found" in err[0] and "needs" in err[1]
