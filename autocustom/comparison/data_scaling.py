"""How many pairs does an axis need? Held-out BiasShift against the number of train pairs, and its power law.

Work on post-training scaling finds task performance growing as a power law in the number of
fine-tuning examples. `compare --train-sizes 8,16,32` trains each of the comparison's losses on nested
subsets of the train split (`train --train-pairs`: the first n of one seeded shuffle, so a larger
subset adds pairs to a smaller one) with the same seed and the same steps per pair as the full run
(so each size sees its pairs as often), and reads each run's test BiasShift from its own final
measurement, the plan every `compare` row uses. A power law `shift = a * n^b` is fitted to the
points by scipy's `curve_fit`, weighted by their intervals, and the n at which the fitted curve
reaches a stated fraction of the largest measured shift is reported beside its parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autocustom.scoring.stats import Estimate, estimate_dict

REACH_FRACTION = 0.9  # "enough pairs": where the fit reaches 90% of the largest shift measured
MIN_POINTS = 3  # a two-parameter curve through fewer points would fit anything


@dataclass(frozen=True)
class SizePoint:
    pairs: int
    steps: int
    bias_shift: Estimate | None  # test split, the kept model of that size's run

    def to_dict(self) -> dict[str, Any]:
        shift = estimate_dict(self.bias_shift)
        return {"pairs": self.pairs, "steps": self.steps, "bias_shift": shift}


@dataclass
class PowerLaw:
    """shift = a * n^b with standard errors, or why no curve could be fitted (`reason`)."""

    a: float | None = None
    b: float | None = None
    a_se: float | None = None
    b_se: float | None = None
    reach: float | None = None  # n where the curve reaches REACH_FRACTION of the largest measured shift
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "fraction": REACH_FRACTION}


@dataclass
class SizeCurve:
    method: str
    points: list[SizePoint]
    fit: PowerLaw = field(default_factory=PowerLaw)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "points": [p.to_dict() for p in self.points],
            "fit": self.fit.to_dict(),
        }

    def sentence(self) -> str:
        """What the curve says, in one line (for the notes under the table)."""
        fit = self.fit
        if fit.a is None:
            return f"{self.method} against train pairs: no power law: {fit.reason}"
        reach = (
            f"it reaches {REACH_FRACTION:.0%} of the largest measured shift at n = {fit.reach:.0f} pairs"
            if fit.reach is not None
            else fit.reason
        )
        return (
            f"{self.method} against train pairs: BiasShift = {fit.a:.3g} x n^{fit.b:.2f} "
            f"(b {fit.b:.2f} ± {1.96 * (fit.b_se or 0):.2f}, {len(self.points)} sizes); {reach}"
        )


def steps_for(pairs: int, all_pairs: int, max_steps: int) -> int:
    """The full run's steps per pair applied to a subset: each size passes over its pairs as often."""
    return max(1, round(max_steps * pairs / all_pairs))


def fit_power_law(points: list[SizePoint]) -> PowerLaw:
    """`a * n^b` through the measured points, each weighted by its interval's half-width."""
    from scipy.optimize import curve_fit

    measured = [p for p in points if p.bias_shift is not None]
    if len(measured) < MIN_POINTS:
        return PowerLaw(reason=f"{len(measured)} measured sizes; a power law needs at least {MIN_POINTS}")
    n = np.array([p.pairs for p in measured], dtype=np.float64)
    shift = np.array([p.bias_shift.value for p in measured])
    if shift.max() <= 0:
        return PowerLaw(reason="no size moved the model toward the target (every BiasShift <= 0)")
    sigma = np.array([max((p.bias_shift.high - p.bias_shift.low) / (2 * 1.96), 1e-6) for p in measured])
    start = (max(shift[-1], 1e-3) / n[-1] ** 0.5, 0.5)
    try:
        (a, b), covariance = curve_fit(
            lambda x, a, b: a * x**b, n, shift, p0=start, sigma=sigma, absolute_sigma=True, maxfev=10_000
        )
    except (RuntimeError, ValueError) as error:
        return PowerLaw(reason=f"the fit did not converge ({error})")
    a_se, b_se = (float(math.sqrt(v)) if v >= 0 else float("nan") for v in np.diag(covariance))
    fit = PowerLaw(float(a), float(b), a_se, b_se)
    if a > 0 and b > 0:
        fit.reach = float((REACH_FRACTION * shift.max() / a) ** (1 / b))
    else:
        fit.reason = "the fitted curve does not rise with n, so no size is enough by it"
    return fit
