"""Estimates with their n and a 95% bootstrap interval: no number leaves the tool without them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_BOOTSTRAP = 1000


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @property
    def excludes_zero(self) -> bool:
        """The 95% interval lies wholly on one side of 0: a move the items can tell from none."""
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.value:+.3f} [{self.low:+.3f}, {self.high:+.3f}] (n={self.n})"


def format_estimate(data: dict[str, float] | None) -> str:
    """An estimate read from JSON as text: value [low, high], or a dash where the figure does not apply."""
    if not data:
        return "–"
    return f"{data['value']:+.3f} [{data['low']:+.3f}, {data['high']:+.3f}]"


def estimate_from(data: dict[str, float | int] | None) -> Estimate | None:
    """An Estimate read back from its `to_dict()` (a JSON file); None stays None."""
    return Estimate(**data) if data else None


def estimate_dict(estimate: Estimate | None) -> dict[str, float | int] | None:
    """An Estimate as JSON writes it (`estimate_from` reads it back); None (a figure that does not
    apply) stays None. Every result file writes its estimates through this and `metrics_dict`."""
    return estimate.to_dict() if estimate is not None else None


def metrics_dict(metrics: Mapping[str, Estimate | None]) -> dict[str, dict[str, float | int] | None]:
    """A table of named estimates (a measurement's `metrics`) as JSON writes it."""
    return {name: estimate_dict(estimate) for name, estimate in metrics.items()}


def metrics_from(data: Mapping[str, dict[str, float | int] | None]) -> dict[str, Estimate | None]:
    """`metrics_dict`'s output read back."""
    return {name: estimate_from(value) for name, value in data.items()}


def bootstrap(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    confidence: float = 0.95,
) -> Estimate:
    """Percentile bootstrap of `statistic` over `values` (resampled with replacement, seeded)."""
    data = np.asarray(values, dtype=np.float64)
    n = int(data.size)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    value = float(statistic(data))
    if n == 1 or n_boot <= 0:
        return Estimate(value, value, value, n)
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, n, size=(n_boot, n))
    if statistic is np.mean:
        replicates = data[indices].mean(axis=1)  # vectorised: the common case, 1000 x n in one go
    else:
        replicates = np.array([statistic(data[row]) for row in indices])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return Estimate(value, float(low), float(high), n)


def paired_difference(
    after: Sequence[float], before: Sequence[float], *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0
) -> Estimate:
    """Mean of after - before over the same items: the interval of a change, not of two levels."""
    a, b = np.asarray(after, dtype=np.float64), np.asarray(before, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {a.shape} vs {b.shape}")
    return bootstrap(a - b, n_boot=n_boot, seed=seed)


def signed_share(indicators: Sequence[float], *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> Estimate:
    """2 * mean(indicator) - 1: a share in [0, 1] mapped to [-1, 1] (Lean)."""
    est = bootstrap(np.asarray(indicators, dtype=np.float64), n_boot=n_boot, seed=seed)
    return Estimate(2 * est.value - 1, 2 * est.low - 1, 2 * est.high - 1, est.n)
