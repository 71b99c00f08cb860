from __future__ import annotations

import numpy as np

from reports._gp import AdditiveGP


def test_fit_with_free_moves_only_those_entries():
    rng = np.random.default_rng(0)
    X = rng.random((30, 3))
    y = np.sin(6 * X[:, 0]) + 0.1 * rng.normal(size=30)
    groups = [np.array([j]) for j in range(3)]
    full = AdditiveGP(groups).fit(X, (y - y.mean()) / y.std())
    start = full.theta.copy()
    start[2], start[5] = np.log(0.05), np.log(0.5)  # third input: amplitude and length scale
    part = AdditiveGP(groups).fit(X, (y - y.mean()) / y.std(), theta0=start, free=[2, 5])
    fixed = [i for i in range(len(start)) if i not in (2, 5)]
    np.testing.assert_array_equal(part.theta[fixed], start[fixed])
    assert not np.allclose(part.theta[[2, 5]], start[[2, 5]])
    assert full.theta[0] > full.theta[2]  # the input with the effect keeps the larger amplitude
