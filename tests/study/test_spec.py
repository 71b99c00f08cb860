from __future__ import annotations

import pytest

from study.inputs import SPECS_DIR
from study.space import optuna_space
from study.spec import SpecError, fit_to_corpus, load_spec, parse_spec

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
    lab = {"train_chars", "embedding_dim", "hidden_size", "num_layers", "cell", "lr_scale", "optimizer", "seq_len",
           "dropout", "grad_clip"}
    assert lab <= set(spec.search)
    # The batch follows seq_len so that every step takes the same characters (issue 18): not searched.
    assert "batch_size" not in spec.search and spec.step_chars_range() == (800, 800)
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
        (_with(fixed={"lr_scale": 2.0}), "lr or lr_scale"),
        (_with(final={"chars": -1}), "final.chars"),
        (_with(final={"minutes": "ten"}), "final.minutes"),
        (_with(final={"patients": 3}), "unknown key"),
        (_with(final={"baseline": {"hiden_size": 512}}), "final.baseline: unknown hyperparameter"),
        (_with(final={"baseline": {"hidden_size": [512]}}), "final.baseline.hidden_size must be"),
        (_with(final={"baseline": "lab"}), "final.baseline must be a table"),
        (_with(final={"evals": 4, "race_evals": 4}), "final.race_evals must be below"),
        (_with(final={"alternatives": {"baseline": {"cell": "gru"}}}), "'baseline' names the study's own"),
        (_with(final={"alternatives": {"gru": "gru"}}), "final.alternatives.gru must be a table"),
        (_with(final={"alternatives": {"gru": {"cel": "gru"}}}), "final.alternatives.gru: unknown hyperparameter"),
        (_with(final={"race_evals": -1}), "final.race_evals"),
        (_with(final={"race_evals": [4, 2]}), "final.race_evals must ascend"),
        (_with(final={"race_evals": [2, 2]}), "final.race_evals must ascend"),
        (_with(final={"race_evals": [0, 2]}), "final.race_evals"),
        (_with(final={"evals": 4, "race_evals": [2, 4]}), "final.race_evals must be below"),
        (_with(scheduler={"name": "asha", "grace_evals": 1}), "unknown key"),
        (_with(budget_chars=1000, repeat_chars=2000), "repeat_chars"),
        (_with(local={"center": {"lr": 1e-3}}), "local.center must give every searched hyperparameter.*missing cell"),
        (_with(local={"center": {"lr": 1e-3, "cell": "gru", "hiden": 3}}), "not searched hiden"),
        (_with(local={"center": {"lr": 1.0, "cell": "gru"}}), "local.center.lr = 1.0 is outside"),
        (_with(local={"center": {"lr": 1e-3, "cell": "rnn"}}), "local.center.cell = 'rnn' is outside"),
        (_with(local={"center": "best"}), "local.center must be a table"),
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


# --- fitting a spec to a corpus smaller than it expects --------------------------------------------------------

TRAIN_CHARS = {"type": "int", "low": 50_000, "high": 2_700_000, "log": True}


def test_a_spec_that_fits_its_corpus_is_left_alone():
    spec = parse_spec(_with(search_train_chars=TRAIN_CHARS, val_chars=40_000))
    assert fit_to_corpus(spec, 2_709_779, 150_543) == (spec, {})


def test_train_chars_beyond_the_text_is_clipped_at_its_length():
    spec = parse_spec(_with(search_train_chars=TRAIN_CHARS))
    fitted, adjusted = fit_to_corpus(spec, 381_612, 21_200)
    p = fitted.search["train_chars"]
    assert (p.low, p.high, p.log, p.type) == (50_000, 381_612, True, "int")
    assert adjusted["train_chars"] == {"from": {"low": 50_000, "high": 2_700_000},
                                       "to": {"low": 50_000, "high": 381_612},
                                       "why": "the corpus has 381,612 training characters"}
    assert fitted.search["lr"] == spec.search["lr"] and spec.search["train_chars"].high == 2_700_000


def test_a_fixed_local_center_is_kept_inside_the_range_the_corpus_leaves():
    center = {"lr": 1e-3, "cell": "gru", "train_chars": 2_700_000}
    spec = parse_spec(_with(search_train_chars=TRAIN_CHARS, local={"seeds": 2, "center": center}))
    assert spec.local_center() == center
    fitted, _ = fit_to_corpus(spec, 381_612, 21_200)
    assert fitted.local_center() == {**center, "train_chars": 381_612}
    assert parse_spec(_with(search_train_chars=TRAIN_CHARS)).local_center() is None  # the search's best


def test_a_range_wholly_beyond_the_text_keeps_its_ratio_below_it():
    spec = parse_spec(_with(search_train_chars={"type": "int", "low": 500_000, "high": 2_000_000, "log": True}))
    fitted, adjusted = fit_to_corpus(spec, 400_000, 21_000)
    p = fitted.search["train_chars"]
    assert (p.low, p.high) == (100_000, 400_000)  # 1:4, as asked
    assert adjusted["train_chars"]["to"] == {"low": 100_000, "high": 400_000}


def test_a_rescaled_low_end_still_holds_one_batch():
    spec = parse_spec(_with(search_train_chars={"type": "int", "low": 100_000, "high": 100_000_000},
                            fixed={"batch_size": 64, "seq_len": 100}))
    fitted, _ = fit_to_corpus(spec, 90_000, 5_000)
    assert fitted.search["train_chars"].low == 64 * 101 and fitted.search["train_chars"].high == 90_000


def test_a_stepped_range_ends_on_its_step():
    spec = parse_spec(_with(search_train_chars={"type": "int", "low": 10_000, "high": 1_000_000, "step": 10_000}))
    fitted, _ = fit_to_corpus(spec, 381_612, 21_200)
    assert (fitted.search["train_chars"].low, fitted.search["train_chars"].high) == (10_000, 380_000)


def test_fixed_train_chars_and_val_chars_beyond_the_text_become_all_of_it():
    spec = parse_spec(_with(fixed={"train_chars": 1_000_000}, val_chars=40_000))
    fitted, adjusted = fit_to_corpus(spec, 381_612, 21_200)
    assert fitted.fixed["train_chars"] == 381_612 and fitted.val_chars == 21_200
    assert adjusted["train_chars"]["from"] == 1_000_000 and adjusted["val_chars"]["to"] == 21_200
    assert fit_to_corpus(parse_spec(_with(val_chars=0)), 381_612, 21_200)[1] == {}  # 0 means all of it already
    fitted, adjusted = fit_to_corpus(parse_spec(_with(final={"chars": 10_000, "val_chars": 50_000})), 381_612, 21_200)
    assert fitted.final["val_chars"] == 21_200 and adjusted["final.val_chars"]["from"] == 50_000


def test_rungs_and_evaluation_points_of_the_default_spec():
    spec = load_spec(SPECS_DIR / "sherlock.toml")
    assert spec.rungs() == [100_000, 300_000]
    points = spec.eval_at()
    assert set(spec.rungs()) <= set(points) and points[-1] == spec.budget_chars == 900_000
    assert points == [100_000, 173_205, 300_000, 519_615, 900_000]  # each rung, one point between, the budget
    assert spec.run_settings()["eval_at"] == points
    assert spec.repeat_chars in points and spec.final["chars"] > 5 * spec.budget_chars
