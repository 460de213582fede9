"""Method against method on the same items: is one customization better than another, not only the base?

`compare` pairs every method with every earlier one, the base included, on the first model's plain
rows. A row is anything with `model`, `method`, `condition`, `margins` and `replies` (compare's `Row`),
so this module needs nothing of the command that makes the rows.
"""

from __future__ import annotations

from typing import Any

from autocustom.comparison.methods import PLAIN_CONDITION
from autocustom.scoring.stats import paired_difference


def method_differences(rows: list[Any], n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Every later method minus every earlier one on the first model's plain rows, paired by item: the
    difference of their BiasShift (margins: the base's cancel) and, where the contrast judge read the
    replies, of their reply shift and of their reply share. A reader can then tell whether one method
    beats another, not only the base. The base comes first: "X - base" repeats X's BiasShift and reply
    shift and adds the change of its reply share, with its paired interval."""
    plain = [r for r in rows if r.condition == PLAIN_CONDITION and r.model == rows[0].model]
    differences = []
    for later_index, later in enumerate(plain):
        for earlier in plain[:later_index]:
            difference: dict[str, Any] = {"a": later.method, "b": earlier.method}
            for name, a, b in (
                ("bias_shift", later.margins, earlier.margins),
                ("reply_shift", later.replies, earlier.replies),
                ("reply_share", _toward(later.replies), _toward(earlier.replies)),
            ):
                both = a is not None and b is not None
                difference[name] = (
                    paired_difference(a, b, n_boot=n_boot, seed=seed).to_dict() if both else None
                )
            differences.append(difference)
    return differences


def _toward(replies: list[float] | None) -> list[float] | None:
    """1 per reply the contrast judge reads as the target pole (r > 0), as the reply share counts it."""
    return None if replies is None else [float(r > 0) for r in replies]
