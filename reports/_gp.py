"""A small Gaussian process with an additive-plus-interaction kernel, written for the importance fit.

    k(x, x') = sum_j a_j m(d_j / l_j) + a_int prod_j m(d_j / l_j) + noise * [x == x']

where d_j is the distance between x and x' in hyperparameter j's encoded columns and m is Matern-5/2.
The additive part lets ~50 trials share what they say about each hyperparameter (a product kernel alone
only learns the effect of, say, hidden size among trials with a similar learning rate), and its amplitudes
a_j switch hyperparameters without effect off (automatic relevance determination). The product part keeps
interactions. Hyperparameters maximise the marginal likelihood (L-BFGS-B with analytic gradients).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.optimize import minimize

SQRT5 = math.sqrt(5.0)
# log-space bounds: amplitudes, length scales (unit box), interaction amplitude, noise (standardized y)
AMP, LENGTH, NOISE = (math.log(1e-4), math.log(10.0)), (math.log(0.05), math.log(20.0)), (math.log(1e-3), math.log(2.0))


def _matern(r: np.ndarray) -> np.ndarray:
    return (1.0 + SQRT5 * r + 5.0 / 3.0 * r * r) * np.exp(-SQRT5 * r)


def _dmatern_dlog_l(r: np.ndarray) -> np.ndarray:
    # d m(d / l) / d log l = -r m'(r), with m'(r) = -(5/3) r (1 + sqrt5 r) exp(-sqrt5 r)
    return 5.0 / 3.0 * r * r * (1.0 + SQRT5 * r) * np.exp(-SQRT5 * r)


def _group_distance(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of A and B (one hyperparameter's columns)."""
    if A.shape[1] == 1:
        return np.abs(A[:, :1] - B[:, 0][None, :])
    sq = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * A @ B.T
    return np.sqrt(np.clip(sq, 0.0, None))


def _distances(A: np.ndarray, B: np.ndarray, groups: list[np.ndarray]) -> list[np.ndarray]:
    return [_group_distance(A[:, cols], B[:, cols]) for cols in groups]


class AdditiveGP:
    """GP regression on standardized targets; `theta` = log(a_1..a_k, l_1..l_k, a_int, noise).

    Args:
        groups: encoded column indices of each hyperparameter.
        random_state: seed for the random restarts of the optimizer.
        restarts: optimizer restarts from random points, besides the default start.
    """

    def __init__(self, groups: list[np.ndarray], *, random_state: int = 0, restarts: int = 2) -> None:
        self.groups = groups
        self.k = len(groups)
        self.random_state = random_state
        self.restarts = restarts
        self.theta: np.ndarray | None = None

    def _bounds(self) -> list[tuple[float, float]]:
        return [AMP] * self.k + [LENGTH] * self.k + [AMP, NOISE]

    def _nlml(self, theta: np.ndarray, dists: list[np.ndarray], y: np.ndarray) -> tuple[float, np.ndarray]:
        k, n = self.k, len(y)
        amps, ls = np.exp(theta[:k]), np.exp(theta[k:2 * k])
        a_int, noise = math.exp(theta[2 * k]), math.exp(theta[2 * k + 1])
        r = [d / l for d, l in zip(dists, ls)]
        m = [_matern(ri) for ri in r]
        prod = np.prod(m, axis=0) if m else np.ones((n, n))
        K = sum(a * mi for a, mi in zip(amps, m)) + a_int * prod + noise * np.eye(n)
        try:
            c = cho_factor(K, lower=True)
        except np.linalg.LinAlgError:
            return 1e10, np.zeros_like(theta)
        alpha = cho_solve(c, y)
        nlml = 0.5 * y @ alpha + np.log(np.diag(c[0])).sum() + 0.5 * n * math.log(2 * math.pi)
        W = np.outer(alpha, alpha) - cho_solve(c, np.eye(n))  # dLML/dθ = 0.5 tr(W dK/dθ)
        grad = np.empty_like(theta)
        for j in range(k):
            grad[j] = 0.5 * np.sum(W * amps[j] * m[j])
            dm = _dmatern_dlog_l(r[j])
            # Matern factors are > 0 at any distance in the unit box (>= 1e-27): dividing is safe, and k times
            # cheaper than the product of the others.
            others = prod / m[j] if k > 1 else 1.0
            grad[k + j] = 0.5 * np.sum(W * (amps[j] * dm + a_int * others * dm))
        grad[2 * k] = 0.5 * np.sum(W * a_int * prod)
        grad[2 * k + 1] = 0.5 * noise * np.trace(W)
        return float(nlml), -grad

    def fit(self, X: np.ndarray, y: np.ndarray, *, theta0: np.ndarray | None = None,
            free: list[int] | None = None) -> AdditiveGP:
        """Fit to (X, y); `theta0` warm-starts (no restarts then), and `free` (with `theta0`) lists the only
        entries of theta to optimize: the others stay at `theta0`."""
        dists = _distances(X, X, self.groups)
        bounds = self._bounds()
        if free is not None and not free:  # the posterior only, at theta0
            self.theta, self.nlml_, self.X_ = np.asarray(theta0, float).copy(), math.nan, X
            self._set_alpha(dists, y)
            return self
        if free is not None and len(free) == 2 and free[1] == free[0] + self.k and free[0] < self.k:
            return self._fit_one(X, y, np.asarray(theta0, float), free[0], dists)
        if free is not None:
            t0 = np.asarray(theta0, float)
            bounds = [b if i in free else (t0[i], t0[i]) for i, b in enumerate(bounds)]
        if theta0 is None:
            start = np.array([math.log(0.3)] * self.k + [math.log(0.5)] * self.k + [math.log(0.1), math.log(0.1)])
            rng = np.random.default_rng(self.random_state)
            starts = [start] + [np.array([rng.uniform(max(lo, -5), min(hi, 1.5)) for lo, hi in bounds])
                                for _ in range(self.restarts)]
        else:
            starts = [np.asarray(theta0, float).copy()]
        best = None
        for s in starts:
            s = np.clip(s, [b[0] for b in bounds], [b[1] for b in bounds])
            res = minimize(self._nlml, s, args=(dists, y), jac=True, method="L-BFGS-B", bounds=bounds)
            if best is None or res.fun < best.fun:
                best = res
        self.theta = best.x
        self.nlml_ = float(best.fun)
        self.X_ = X
        self._set_alpha(dists, y)
        return self

    def _fit_one(self, X: np.ndarray, y: np.ndarray, theta0: np.ndarray, j: int,
                 dists: list[np.ndarray]) -> AdditiveGP:
        """`fit` with only group j's amplitude and length scale free: the other groups' kernel terms are summed
        and multiplied once, so each step of the optimizer costs one Cholesky factorization (the bootstrap's
        probe refit; the general path recomputes every group at every step)."""
        k, n = self.k, len(y)
        amps, ls = np.exp(theta0[:k]), np.exp(theta0[k:2 * k])
        a_int, noise = math.exp(theta0[2 * k]), math.exp(theta0[2 * k + 1])
        fixed = [_matern(d / l) for i, (d, l) in enumerate(zip(dists, ls)) if i != j]
        A = sum((a * mi for a, mi in zip(np.delete(amps, j), fixed)), np.zeros((n, n))) + noise * np.eye(n)
        P = a_int * (np.prod(fixed, axis=0) if fixed else np.ones((n, n)))

        def nlml(t: np.ndarray) -> tuple[float, np.ndarray]:
            a, r = math.exp(t[0]), dists[j] / math.exp(t[1])
            mj = _matern(r)
            try:
                c = cho_factor(A + (a + P) * mj, lower=True)
            except np.linalg.LinAlgError:
                return 1e10, np.zeros(2)
            alpha = cho_solve(c, y)
            W = np.outer(alpha, alpha) - cho_solve(c, np.eye(n))
            val = 0.5 * y @ alpha + np.log(np.diag(c[0])).sum() + 0.5 * n * math.log(2 * math.pi)
            return float(val), -0.5 * np.array([np.sum(W * a * mj), np.sum(W * (a + P) * _dmatern_dlog_l(r))])

        bounds = [AMP, LENGTH]
        start = np.clip([theta0[j], theta0[k + j]], [b[0] for b in bounds], [b[1] for b in bounds])
        res = minimize(nlml, start, jac=True, method="L-BFGS-B", bounds=bounds)
        self.theta = theta0.copy()
        self.theta[[j, k + j]] = res.x
        self.nlml_ = float(res.fun)
        self.X_ = X
        self._set_alpha(dists, y)
        return self

    def _gram(self, dists: list[np.ndarray]) -> np.ndarray:
        k = self.k
        amps, ls, a_int = np.exp(self.theta[:k]), np.exp(self.theta[k:2 * k]), math.exp(self.theta[2 * k])
        m = [_matern(d / l) for d, l in zip(dists, ls)]
        return sum(a * mi for a, mi in zip(amps, m)) + a_int * np.prod(m, axis=0)

    def _set_alpha(self, dists: list[np.ndarray], y: np.ndarray) -> None:
        K = self._gram(dists) + self.noise * np.eye(len(y))
        self.chol_ = cho_factor(K, lower=True)
        self.alpha_ = cho_solve(self.chol_, y)

    @property
    def noise(self) -> float:
        return math.exp(self.theta[2 * self.k + 1])

    def predict(self, Z: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """Posterior mean at the rows of Z."""
        out = np.empty(len(Z))
        for s in range(0, len(Z), chunk):
            out[s:s + chunk] = self._gram(_distances(Z[s:s + chunk], self.X_, self.groups)) @ self.alpha_
        return out

    def base_kernels(self, base: np.ndarray) -> list[np.ndarray]:
        """Per-hyperparameter kernel matrices between `base` and the training rows, for `partial_dependence`."""
        ls = np.exp(self.theta[self.k:2 * self.k])
        return [_matern(d / l) for d, l in zip(_distances(base, self.X_, self.groups), ls)]

    def partial_dependence(self, base: np.ndarray, js: list[int], rows: np.ndarray,
                           m_base: list[np.ndarray] | None = None) -> np.ndarray:
        """Posterior mean averaged over the rows of `base`, with hyperparameters `js` set to each row of `rows`
        (their encoded columns side by side). Exact and cheap: the kernel is a sum and a product over
        hyperparameters, so the average over `base` factors out of the grid. `m_base` is
        `base_kernels(base)`, passed when several calls share one `base`."""
        return self.pd_kernel(base, js, rows, m_base) @ self.alpha_

    def pd_kernel(self, base: np.ndarray, js: list[int], rows: np.ndarray,
                  m_base: list[np.ndarray] | None = None) -> np.ndarray:
        """Covariance (prior) between the partial dependence at `rows` (see `partial_dependence`) and the latent
        function at the training rows: (len(rows), n)."""
        k = self.k
        amps, ls, a_int = np.exp(self.theta[:k]), np.exp(self.theta[k:2 * k]), math.exp(self.theta[2 * k])
        if m_base is None:
            m_base = self.base_kernels(base)
        rest = [i for i in range(k) if i not in js]
        add = sum((amps[i] * m_base[i] for i in rest), np.zeros_like(m_base[0])).mean(axis=0)
        prod = np.prod([m_base[i] for i in rest], axis=0).mean(axis=0) if rest else np.ones(len(self.X_))
        K = np.broadcast_to(add, (len(rows), len(add))).copy()
        P = np.broadcast_to(a_int * prod, K.shape).copy()
        start = 0
        for j in js:
            w = len(self.groups[j])
            m = _matern(_group_distance(rows[:, start:start + w], self.X_[:, self.groups[j]]) / ls[j])
            K += amps[j] * m
            P *= m
            start += w
        return K + P

    def kernel_means(self, base: np.ndarray) -> np.ndarray:
        """E[m_j(x_j, x'_j)] over independent pairs of rows of `base`, per hyperparameter (the double average
        of each factor of the kernel over the search space)."""
        ls = np.exp(self.theta[self.k:2 * self.k])
        return np.array([_matern(d / l).mean() for d, l in zip(_distances(base, base, self.groups), ls)])

    def effect_cov(self, js: list[int], rows: np.ndarray, pd_k: np.ndarray, kappa: np.ndarray) -> np.ndarray:
        """Posterior covariance of the partial dependence on hyperparameters `js` at `rows` (their encoded columns
        side by side, as in `pd_kernel`), up to a constant (the other hyperparameters' additive terms averaged over
        the space, which neither a centred curve nor an interaction sees): (len(rows), len(rows)).

        The prior is sum_{j in js} a_j m_j(g, g') + a_int prod_{j in js} m_j(g, g') prod_{i not in js} kappa_i
        (`kappa` from `kernel_means`); the posterior subtracts pd_k (K + noise I)^-1 pd_k^T, `pd_k` from
        `pd_kernel`.
        """
        k = self.k
        amps, ls, a_int = np.exp(self.theta[:k]), np.exp(self.theta[k:2 * k]), math.exp(self.theta[2 * k])
        ms, start = [], 0
        for j in js:
            w = len(self.groups[j])
            cols = rows[:, start:start + w]
            ms.append(_matern(_group_distance(cols, cols) / ls[j]))
            start += w
        others = np.prod(np.delete(kappa, js)) if k > len(js) else 1.0
        prior = sum(amps[j] * m for j, m in zip(js, ms)) + a_int * others * np.prod(ms, axis=0)
        return prior - pd_k @ cho_solve(self.chol_, pd_k.T)

    def effect_draws(self, js: list[int], rows: np.ndarray, pd_k: np.ndarray, kappa: np.ndarray, size: int,
                     rng: np.random.Generator, project: np.ndarray) -> np.ndarray:
        """Draws of the partial dependence on `js` at `rows` from the GP posterior, mapped by the linear `project`
        (len(rows) square: centring for a main effect, the removal of both main effects for a pair's
        interaction): (size, len(rows)). See `effect_cov`."""
        cov = project @ self.effect_cov(js, rows, pd_k, kappa) @ project.T
        vals, vecs = np.linalg.eigh((cov + cov.T) / 2)
        root = vecs * np.sqrt(np.clip(vals, 0.0, None))
        return (project @ (pd_k @ self.alpha_))[None, :] + rng.standard_normal((size, len(rows))) @ root.T

    def main_effect_draws(self, j: int, rows: np.ndarray, pd_k: np.ndarray, kappa: np.ndarray,
                          size: int, rng: np.random.Generator) -> np.ndarray:
        """Draws of hyperparameter j's main-effect curve at `rows` from the GP posterior, each centred (the
        curve is known only up to a constant, which a variance does not see): (size, len(rows))."""
        g = len(rows)
        return self.effect_draws([j], rows, pd_k, kappa, size, rng, np.eye(g) - 1.0 / g)

    def loo_residuals(self) -> np.ndarray:
        """Leave-one-out residuals in closed form (Rasmussen & Williams eq. 5.12)."""
        k_inv = cho_solve(self.chol_, np.eye(len(self.alpha_)))
        return self.alpha_ / np.diag(k_inv)
