"""Scoring: per-answer log-probs, BiasShift/Lean/GenLean/TailShift, MMLU, Drift, and their intervals."""
