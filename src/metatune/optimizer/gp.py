"""A small Gaussian process on the unit cube: Matern-5/2 kernel with one lengthscale per coordinate (ARD),
constant mean, Gaussian noise; hyperparameters by maximum marginal likelihood (L-BFGS-B).

The transfer method fits one of these per source dataset. A source's trials do not change while the target is
being tuned, so fits are memoized on the data's bytes: a benchmark or a long session fits each source once.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_solve, cholesky, solve_triangular
from scipy.optimize import minimize

# Bounds in unit-cube units (lengthscales) and in units of the normalized objective (signal, noise variances).
LENGTHSCALE_BOUNDS = (0.02, 20.0)
SIGNAL_BOUNDS = (0.05, 10.0)
NOISE_BOUNDS = (1e-4, 1.0)
JITTER = 1e-8
# Hyperparameters are fitted on at most this many of the points (an even stride through them): the likelihood
# surface is already well determined, and each of the optimizer's evaluations costs a Cholesky factorization.
MAX_FIT_POINTS = 64


def matern52(a: np.ndarray, b: np.ndarray, lengthscales: np.ndarray) -> np.ndarray:
    a, b = a / lengthscales, b / lengthscales
    sq = np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0.0)
    r = np.sqrt(5.0 * sq)
    return (1 + r + r * r / 3) * np.exp(-r)


@dataclass(frozen=True)
class GP:
    x: np.ndarray
    y: np.ndarray
    lengthscales: np.ndarray
    signal: float  # kernel variance
    noise: float
    mean: float
    chol: np.ndarray  # lower Cholesky factor of K + noise I
    alpha: np.ndarray  # (K + noise I)^-1 (y - mean)

    def predict(self, xq: np.ndarray, variance: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Posterior mean and (unless not wanted: it costs most) variance of the latent function at `xq`."""
        k = self.signal * matern52(xq, self.x, self.lengthscales)
        if not variance:
            return self.mean + k @ self.alpha, None
        v = solve_triangular(self.chol, k.T, lower=True)
        return self.mean + k @ self.alpha, np.maximum(self.signal - (v * v).sum(0), 1e-12)

    def loo_mean(self) -> np.ndarray:
        """Leave-one-out predictions at the training points, in closed form (Rasmussen & Williams, eq. 5.12)."""
        inv = cho_solve((self.chol, True), np.eye(len(self.y)))
        return self.y - self.alpha / np.diag(inv)


def build(x: np.ndarray, y: np.ndarray, lengthscales: np.ndarray, signal: float, noise: float) -> GP:
    mean = float(y.mean())
    k = signal * matern52(x, x, lengthscales) + (noise + JITTER) * np.eye(len(y))
    chol = cholesky(k, lower=True)
    return GP(x, y, lengthscales, signal, noise, mean, chol, cho_solve((chol, True), y - mean))


def _neg_log_likelihood(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    try:
        gp = build(x, y, np.exp(theta[:d]), math.exp(theta[d]), math.exp(theta[d + 1]))
    except np.linalg.LinAlgError:
        return 1e10
    return float(0.5 * (y - gp.mean) @ gp.alpha + np.log(np.diag(gp.chol)).sum())


@functools.lru_cache(maxsize=512)
def _fit_cached(x_bytes: bytes, y_bytes: bytes, shape: tuple[int, int]) -> GP:
    x = np.frombuffer(x_bytes).reshape(shape)
    y = np.frombuffer(y_bytes)
    d = shape[1]
    stride = slice(None, None, -(-len(y) // MAX_FIT_POINTS))
    theta0 = np.log(np.r_[np.full(d, 0.3), max(float(y.var()), 0.1), 0.05])
    bounds = [tuple(map(math.log, LENGTHSCALE_BOUNDS))] * d + [tuple(map(math.log, SIGNAL_BOUNDS)),
                                                               tuple(map(math.log, NOISE_BOUNDS))]
    res = minimize(_neg_log_likelihood, theta0, args=(x[stride], y[stride]), method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": 60})
    theta = res.x if np.isfinite(res.fun) else theta0
    return build(x, y, np.exp(theta[:d]), math.exp(theta[d]), math.exp(theta[d + 1]))


def fit(x: np.ndarray, y: np.ndarray) -> GP:
    """A GP with hyperparameters by maximum marginal likelihood (memoized on the data)."""
    x, y = np.ascontiguousarray(x, dtype=float), np.ascontiguousarray(y, dtype=float)
    return _fit_cached(x.tobytes(), y.tobytes(), x.shape)
