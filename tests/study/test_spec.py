from __future__ import annotations

import pytest

from study.inputs import SPECS_DIR
from study.space import optuna_space
from study.spec import SpecError, load_spec, parse_spec

BASE = {
    "name": "t",
    "search": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
               "cell": {"type": "categorical", "choices": ["gru", "lstm"]}},
}


@pytest.mark.parametrize("name", ["sherlock", "shakespeare", "smoke"])
def test_repository_specs_are_valid(name):
    spec = load_spec(SPECS_DIR / f"{name}.toml")
    assert spec.name == name and spec.search
    space = optuna_space(spec)
    assert set(space) == set(spec.search)


def test_lab_hyperparameters_are_searched_by_default():
    spec = load_spec(SPECS_DIR / "sherlock.toml")
    lab = {"train_chars", "embedding_dim", "hidden_size", "num_layers", "cell", "lr", "optimizer", "seq_len",
           "batch_size", "dropout", "grad_clip"}
    assert lab <= set(spec.search)
    assert set(spec.search["cell"].choices) == {"rnn_tanh", "rnn_relu", "gru", "lstm"}


def _with(**changes):
    raw = {**BASE, "search": {**BASE["search"]}}
    for key, value in changes.items():
        if key.startswith("search_"):
            raw["search"][key[len("search_"):]] = value
        else:
            raw[key] = value
    return raw


@pytest.mark.parametrize(
    "raw, message",
    [
        (_with(budget=10), "unknown key"),
        (_with(search_lr={"type": "float", "low": 1e-2, "high": 1e-4}), "greater than high"),
        (_with(search_lr={"type": "float", "low": 0.0, "high": 1e-2, "log": True}), "log scale needs low > 0"),
        (_with(search_cell={"type": "categorical", "choices": []}), "non-empty list"),
        (_with(search_cell={"type": "categorical", "choices": ["gru", "transformer"]}), "not a valid value"),
        (_with(search_hidden={"type": "int", "low": 1, "high": 2}), "unknown hyperparameter"),
        (_with(search_lr={"type": "float", "low": 1e-4, "high": 1e-2, "lg": True}), "unknown key"),
        (_with(budget_chars=0), "budget_chars must be >= 1"),
        (_with(budget_chars=-5), "budget_chars must be >= 1"),
        (_with(trials=0), "trials must be >= 1"),
        (_with(fixed={"lr": 0.1}), "both searched and fixed"),
        (_with(sampler={"name": "grid"}), "sampler.name"),
        (_with(sampler={"name": "tpe", "startup": "sobol"}), "sampler.startup"),
        (_with(scheduler={"name": "asha", "patience": 3}), "unknown key"),
        (_with(search_num_layers={"type": "int", "low": 1.5, "high": 3}), "finite integer"),
        (_with(name=""), "name"),
    ],
)
def test_bad_specs_are_rejected_with_a_reason(raw, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(raw)


def test_spec_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[search.lr]\ntype = "float"\nlow = 1\nhigh = [\n')
    with pytest.raises(SpecError, match="bad.toml: not valid TOML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "missing.toml")


def test_nothing_in_a_spec_is_evaluated(tmp_path):
    path = tmp_path / "evil.toml"
    path.write_text('name = "__import__(\'os\').system(\'touch pwned\')"\n'
                    '[search.cell]\ntype = "categorical"\nchoices = ["gru"]\n')
    spec = load_spec(path)
    assert spec.name.startswith("__import__") and not (tmp_path / "pwned").exists()
