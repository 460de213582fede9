"""Does a stricter subareas prompt help the packaged writer? The subareas stage alone, run with the
current prompts/subareas.md and with a variant (a format line and two worked examples), per axis and
seed: distinct topics kept of those asked, items dropped (poles named as topics, repeats, merges),
calls made, and topics copied from the examples (docs/results.md, "A stricter subareas prompt").

    .venv/bin/python scripts/prompt_study.py --axes formal:casual,optimistic:pessimistic --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path
from unittest import mock

from autocustom.data import generate as generating
from autocustom.data.generate import GenerateConfig, _Run
from autocustom.llm.cache import CachedBackend, CallCache
from autocustom.llm.factory import make_backend
from autocustom.progress import no_progress
from autocustom.prompts import load_prompt, parse_template

EXAMPLES = ("Job interviews", "Planning a birthday party")
VARIANT = """---
variables: [pole_a, pole_b, count, poles_note, avoid]
---
List {{count}} everyday topics where a {{pole_a}} person and a {{pole_b}} person would give different answers.{{poles_note}}{{avoid}}
Each topic names a situation in a few words, never a style or a pole: for example "Job interviews" or "Planning a birthday party".
Write a numbered list, one topic per line, nothing else:
1."""


def subareas_stage(axis: str, seed: int, variant: bool, backend) -> dict[str, object]:
    """One subareas stage in a fresh directory: what it kept and dropped, and the calls it made."""
    with tempfile.TemporaryDirectory() as folder:
        config = GenerateConfig(axis=axis, out=Path(folder), subareas=10, seed=seed)
        template = (
            parse_template("subareas", VARIANT, Path("variant")) if variant else load_prompt("subareas")
        )
        with (
            CallCache(Path(folder) / "cache.sqlite") as cache,
            mock.patch.object(
                generating, "load_prompt", lambda name: template if name == "subareas" else load_prompt(name)
            ),
        ):
            cached = CachedBackend(backend, cache)
            run = _Run(config, cached, no_progress)
            kept = run.subareas()
            names = [s.name for s in kept]
            return {
                "axis": axis,
                "seed": seed,
                "prompt": "variant" if variant else "current",
                "kept": len(names),
                "dropped": dict(Counter(d.reason for d in run.dropped)),
                "merged": len(run.counts.get("subareas_merged", [])),
                "calls": cached.calls_made,
                "copied_examples": sum(n.lower() in {e.lower() for e in EXAMPLES} for n in names),
                "names": names,
            }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--axes", default="formal:casual,optimistic:pessimistic")
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    backend = make_backend("local", None)
    for axis in args.axes.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for variant in (False, True):
                print(json.dumps(subareas_stage(axis, seed, variant, backend)), flush=True)


if __name__ == "__main__":
    main()
