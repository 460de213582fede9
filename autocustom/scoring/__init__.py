"""Scoring: per-answer log-probs, BiasShift/Lean/TailShift, MMLU, Drift, the judge of free replies, and their intervals."""
