"""The Frechet distance between two sets of features (FID on Inception features, FVD on I3D features).

d^2 = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)), with S the sample covariances (N - 1 in the
denominator, as numpy's `cov`). Features are accumulated as running sums in float64, so memory is bounded by the
feature size, not by the number of frames.
"""

from __future__ import annotations

import numpy as np


class FeatureStats:
    """Running mean and covariance of feature vectors: `add` batches of (N, D), then `mean` and `covariance`."""

    def __init__(self, dim: int):
        self.count = 0
        self.total = np.zeros(dim, np.float64)
        self.outer = np.zeros((dim, dim), np.float64)

    def add(self, features) -> None:
        features = np.asarray(features, np.float64).reshape(-1, len(self.total))
        self.count += len(features)
        self.total += features.sum(0)
        self.outer += features.T @ features

    def mean(self) -> np.ndarray:
        return self.total / self.count

    def covariance(self) -> np.ndarray:
        mean = self.mean()
        return (self.outer - self.count * np.outer(mean, mean)) / (self.count - 1)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Tr((S_1 S_2)^(1/2)) is the sum of the square roots of the eigenvalues of S_1^(1/2) S_2 S_1^(1/2), a symmetric
    positive semi-definite matrix with the same eigenvalues as S_1 S_2: symmetric eigendecompositions are stable
    where a general matrix square root of the product can turn complex.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    values, vectors = np.linalg.eigh(np.asarray(sigma1, np.float64))
    root1 = (vectors * np.sqrt(values.clip(min=0))) @ vectors.T
    middle = root1 @ np.asarray(sigma2, np.float64) @ root1
    trace_root = np.sqrt(np.linalg.eigvalsh((middle + middle.T) / 2).clip(min=0)).sum()
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root)


def frechet_distance_of(fake: FeatureStats, real: FeatureStats) -> float:
    """The Frechet distance between the feature sets behind two `FeatureStats` (NaN with fewer than 2 of either)."""
    if fake.count < 2 or real.count < 2:
        return float("nan")
    return frechet_distance(fake.mean(), fake.covariance(), real.mean(), real.covariance())
