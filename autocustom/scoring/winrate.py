"""Win rates of a method's replies against the base's: raw, length-controlled, and the judge's consistency.

`verdicts` is the judge's (n, 2) array (scoring/judge.py): per question, 1 where the method's reply was
chosen, 0 where the base's, 0.5 where the verdict could not be read; one column per order. A question
whose two verdicts disagree is a tie: it counts 0.5, as the mean of its two columns.

LLM judges prefer longer replies, so a method that only lengthens its replies wins without moving
toward the pole. The length-controlled win rate is AlpacaEval 2's (Dubois et al. 2024): a logistic
model of each verdict on `tanh(length difference / sd)`, predicted at a length difference of zero,
fitted by scikit-learn. Its interval resamples the questions and refits.
"""

from __future__ import annotations

import numpy as np

from autocustom.scoring.stats import DEFAULT_BOOTSTRAP, Estimate, bootstrap

# inverse L2 strength of the length slope only (scikit-learn leaves the intercept unpenalised): weak
# enough to leave the fit alone, strong enough to keep it finite when the verdicts follow length exactly
LENGTH_C = 10.0


def win_rate(verdicts: np.ndarray, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> Estimate:
    """Share of questions won against the base, ties counting one half."""
    return bootstrap(np.asarray(verdicts, dtype=np.float64).mean(axis=1), n_boot=n_boot, seed=seed)


def position_consistency(verdicts: np.ndarray, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> Estimate:
    """Share of questions the judge decided the same way in both orders (a readable verdict each time)."""
    v = np.asarray(verdicts, dtype=np.float64)
    alike = (v[:, 0] == v[:, 1]) & (v[:, 0] != 0.5)
    return bootstrap(alike.astype(np.float64), n_boot=n_boot, seed=seed)


def length_controlled_win_rate(
    verdicts: np.ndarray,
    lengths: np.ndarray,
    base_lengths: np.ndarray,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> Estimate:
    """The win rate the logistic length model predicts for replies as long as the base's."""
    v = np.asarray(verdicts, dtype=np.float64)
    difference = np.asarray(lengths, dtype=np.float64) - np.asarray(base_lengths, dtype=np.float64)

    def statistic(rows: np.ndarray) -> float:
        index = rows.astype(int)
        return _at_equal_length(v[index], difference[index])

    return bootstrap(np.arange(len(v), dtype=np.float64), statistic, n_boot=n_boot, seed=seed)


def _at_equal_length(verdicts: np.ndarray, difference: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression

    raw = float(verdicts.mean())
    sd = float(difference.std())
    if raw in (0.0, 1.0) or sd == 0:  # one class, or one length difference: length explains nothing
        return raw
    feature = np.tanh(difference / sd)
    x = np.repeat(feature, 2 * verdicts.shape[1])[:, None]  # each verdict: a 1-row and a 0-row
    y = np.tile([1, 0], verdicts.size)
    weight = np.stack([verdicts.ravel(), 1 - verdicts.ravel()], axis=1).ravel()  # a tie: half each
    model = LogisticRegression(C=LENGTH_C, solver="newton-cholesky", tol=1e-8, max_iter=100)
    model.fit(x, y, sample_weight=weight)
    return float(1 / (1 + np.exp(-model.intercept_[0])))
