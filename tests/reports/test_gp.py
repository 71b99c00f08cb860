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


def test_the_likelihood_gradient_matches_finite_differences():
    """The hand-derived gradient of the negative log marginal likelihood (amplitudes, length scales, interaction
    amplitude, noise) against central differences, at random points of the hyperparameter space."""
    from reports._gp import _distances

    rng = np.random.default_rng(0)
    X = rng.random((25, 4))
    groups = [np.array([0]), np.array([1]), np.array([2, 3])]  # a two-column (categorical-like) group too
    y = np.sin(4 * X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.normal(size=25)
    y = (y - y.mean()) / y.std()
    gp = AdditiveGP(groups)
    dists = _distances(X, X, groups)
    for _ in range(5):
        theta = rng.uniform(-1.5, 1.0, size=2 * gp.k + 2)
        theta[-1] = rng.uniform(-4, -1)  # the noise, small as fitted
        _, grad = gp._nlml(theta, dists, y)
        h = 1e-5
        numeric = np.array([(gp._nlml(theta + h * e, dists, y)[0] - gp._nlml(theta - h * e, dists, y)[0]) / (2 * h)
                            for e in np.eye(len(theta))])
        np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-6)
