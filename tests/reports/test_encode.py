"""The encoded space integrates over the sampler's own distributions (ints discrete, as Optuna draws them)."""

from __future__ import annotations

import numpy as np
import pytest
from optuna._transform import _SearchSpaceTransform
from optuna.distributions import IntDistribution

from reports import _encode
from reports._load import ParamSpec


@pytest.mark.parametrize("low,high,log,step", [(1, 3, False, 1), (1, 8, True, 1), (16, 128, True, 1),
                                               (32, 256, False, 32), (50_000, 1_000_000, True, 1)])
def test_int_quantiles_are_optunas_draws(low, high, log, step):
    # Optuna's RandomSampler draws uniformly in the transformed bounds and untransforms: the same uniform
    # positions must give the same integers here (an exact check of the distribution, not a frequency test).
    dist = IntDistribution(low, high, log=log, step=step)
    tr = _SearchSpaceTransform({"x": dist})
    lo, hi = tr.bounds[0]
    q = (np.arange(997) + 0.5) / 997
    theirs = np.array([tr.untransform(np.array([lo + u * (hi - lo)]))["x"] for u in q], dtype=float)
    spec = ParamSpec("x", "int", low, high, log, step=step)
    np.testing.assert_array_equal(_encode.int_quantile(spec, q), theirs)


def test_few_valued_int_is_integrated_on_its_values():
    spec = ParamSpec("num_layers", "int", 1, 3)
    rows, values, w = _encode.quadrature(spec, 21)
    assert values == [1, 2, 3] and np.allclose(w, 1 / 3) and np.allclose(rows[:, 0], [0, 0.5, 1])
    # a linear effect's variance over {1, 2, 3} is 2/3 (the continuum [1, 3] would say 1/3)
    v = np.array(values, float)
    assert w @ (v - w @ v) ** 2 == pytest.approx(2 / 3)
    s = _encode.sample_space([spec], 30_000, np.random.default_rng(0))[:, 0]
    assert set(np.unique(s)) == {0.0, 0.5, 1.0}
    assert np.allclose(np.bincount((2 * s).astype(int)) / len(s), 1 / 3, atol=0.01)


def test_log_int_probabilities_and_step():
    spec = ParamSpec("embedding_dim", "int", 1, 4, log=True)
    levels, p = _encode.int_levels(spec)
    expected = np.log([1.5, 2.5, 3.5, 4.5]) - np.log([0.5, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(p, expected / expected.sum())
    stepped = ParamSpec("seq_len", "int", 32, 256, step=32)
    assert _encode.quadrature(stepped, 21)[1] == [32, 64, 96, 128, 160, 192, 224, 256]
    assert _encode.decode(stepped, np.array([0.0, 0.1, 1.0])).tolist() == [32, 64, 256]


def test_many_valued_int_uses_quantile_midpoints():
    spec = ParamSpec("hidden_size", "int", 64, 1024, log=True)
    _, values, w = _encode.quadrature(spec, 21)
    assert len(values) == 21 and np.allclose(w, 1 / 21) and values == sorted(values)
    assert values[10] == pytest.approx(256, rel=0.02)  # the log-uniform median of [63.5, 1024.5]


def test_optuna_reference_sees_the_int_step_the_sampler_used():
    """An int range with a step is the same distribution for Optuna's evaluators as for the sampler (issue 19)."""
    from reports._load import ParamSpec
    from reports._reference import _distribution, _value

    spec = ParamSpec("train_chars", "int", low=1000, high=9500, log=False, step=1000)
    d = _distribution(spec)
    assert (d.low, d.high, d.step) == (1000, 9000, 1000)
    assert _value(spec, 4600.0) == 5000 and _value(spec, 9400.0) == 9000
