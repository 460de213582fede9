"""BiasShift, Lean and TailShift from per-question margins, each with its n and bootstrap interval.

A margin is m(q) = lp(target|q) - lp(opposite|q) in nats/token (see logprobs.pair_margins).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autocustom.scoring.stats import DEFAULT_BOOTSTRAP, Estimate, bootstrap, paired_difference, signed_share


def bias_shift(tuned_margins, base_margins, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> Estimate:
    """Mean margin change per question: how far tuning moved the model toward the target (nats/token)."""
    return paired_difference(tuned_margins, base_margins, n_boot=n_boot, seed=seed)


def lean(margins, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> Estimate:
    """Share of questions where the target answer is likelier, mapped to [-1, 1]; needs no base model."""
    return signed_share(np.asarray(margins) > 0, n_boot=n_boot, seed=seed)


def tail_shift(
    tuned_margins, base_margins, tail: float = 0.1, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0
) -> Estimate:
    """Mean change over the `tail` fraction of questions that moved least: does the shift hold on the hardest?

    The tail is chosen again inside each bootstrap resample, so the interval accounts for which
    questions fall in it, not only for their values.
    """
    if not 0 < tail <= 1:
        raise ValueError(f"tail must be in (0, 1], got {tail}")
    change = np.asarray(tuned_margins, dtype=np.float64) - np.asarray(base_margins, dtype=np.float64)

    def lowest_mean(values: np.ndarray) -> float:
        k = max(1, int(np.ceil(tail * values.size)))
        return float(np.partition(values, k - 1)[:k].mean())

    return bootstrap(change, lowest_mean, n_boot=n_boot, seed=seed)


def per_subarea(
    subareas: Sequence[str],
    tuned_margins,
    base_margins=None,
    *,
    names: dict[str, str] | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> list[dict]:
    """One row per subarea (in first-seen order): id, name, n, lean and, with a base, bias_shift and
    base_lean (so a report can show where on the axis the base sat and where the model moved it)."""
    labels = np.asarray(subareas)
    tuned = np.asarray(tuned_margins, dtype=np.float64)
    base = None if base_margins is None else np.asarray(base_margins, dtype=np.float64)
    rows = []
    for subarea in dict.fromkeys(subareas):
        selected = labels == subarea
        row: dict = {
            "subarea": subarea,
            "name": (names or {}).get(subarea, subarea),
            "n": int(selected.sum()),
            "lean": lean(tuned[selected], n_boot=n_boot, seed=seed).to_dict(),
            "bias_shift": None,
            "base_lean": None,
        }
        if base is not None:
            row["bias_shift"] = bias_shift(
                tuned[selected], base[selected], n_boot=n_boot, seed=seed
            ).to_dict()
            row["base_lean"] = lean(base[selected], n_boot=n_boot, seed=seed).to_dict()
        rows.append(row)
    return rows
