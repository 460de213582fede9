"""Write a 500-pair formal:casual CSV with no subarea column, import it, and print the wall time and clusters.

The pairs are synthetic (10 everyday domains x 5 verbs x 10 objects, templated answers), so the clusters
found can be checked against the domains that made them. Used for the figure in docs/data-format.md:

    .venv/bin/python scripts/import_500.py --out /tmp/import-500
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

DOMAINS = {
    "cooking": (
        ["cook", "store", "season", "choose", "reheat"],
        ["rice", "salmon", "lentils", "tofu", "kale", "eggs", "bread", "pasta", "beef", "squash"],
    ),
    "gardening": (
        ["plant", "water", "prune", "fertilise", "protect"],
        [
            "tomatoes",
            "roses",
            "basil",
            "an apple tree",
            "tulips",
            "a lawn",
            "ferns",
            "strawberries",
            "a hedge",
            "succulents",
        ],
    ),
    "money": (
        ["budget for", "save for", "pay off", "insure", "invest in"],
        [
            "a car",
            "a house",
            "university",
            "a wedding",
            "retirement",
            "a holiday",
            "a phone",
            "a loan",
            "a pension",
            "index funds",
        ],
    ),
    "travel": (
        ["book", "pack for", "plan", "afford", "survive"],
        [
            "a flight to Tokyo",
            "a train across Europe",
            "a road trip",
            "a ski week",
            "a cruise",
            "a camping trip",
            "a city break",
            "a long layover",
            "a backpacking month",
            "a business trip",
        ],
    ),
    "fitness": (
        ["start", "improve at", "recover from", "warm up for", "stay motivated for"],
        [
            "running",
            "swimming",
            "cycling",
            "yoga",
            "weightlifting",
            "climbing",
            "rowing",
            "tennis",
            "a marathon",
            "pilates",
        ],
    ),
    "home repair": (
        ["fix", "replace", "clean", "paint", "inspect"],
        [
            "a leaking tap",
            "a door hinge",
            "a cracked tile",
            "a window frame",
            "a radiator",
            "a fence",
            "gutters",
            "a ceiling stain",
            "a wobbly chair",
            "a light switch",
        ],
    ),
    "pets": (
        ["feed", "train", "groom", "calm", "adopt"],
        [
            "a puppy",
            "an old cat",
            "a rabbit",
            "a parrot",
            "goldfish",
            "a hamster",
            "a rescue dog",
            "a kitten",
            "a tortoise",
            "a ferret",
        ],
    ),
    "work": (
        ["prepare for", "ask for", "negotiate", "decline", "follow up on"],
        [
            "a job interview",
            "a raise",
            "a deadline",
            "a promotion",
            "a meeting",
            "a contract",
            "remote work",
            "a reference",
            "a performance review",
            "a new project",
        ],
    ),
    "technology": (
        ["set up", "secure", "speed up", "back up", "choose"],
        [
            "a laptop",
            "a home router",
            "a password manager",
            "a smartphone",
            "cloud storage",
            "a printer",
            "a smart TV",
            "an email account",
            "a tablet",
            "a VPN",
        ],
    ),
    "study": (
        ["learn", "revise", "practise", "teach myself", "remember"],
        [
            "French verbs",
            "calculus",
            "the piano",
            "world history",
            "chemistry",
            "coding in Python",
            "essay writing",
            "statistics",
            "a speech",
            "anatomy",
        ],
    ),
}


def write_csv(path: Path) -> int:
    rows = []
    for verbs, objects in DOMAINS.values():
        for verb in verbs:
            for thing in objects:
                question = f"How should I {verb} {thing}?"
                rows.append({
                    "question": question,
                    "formal": f"Certainly. To {verb} {thing}, I would recommend a careful, methodical approach.",
                    "casual": f"Oh, {verb} {thing}? Easy, just wing it, honestly it's no big deal lol.",
                })  # fmt: skip
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for pairs.csv and the dataset")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    source = args.out / "pairs.csv"
    n = write_csv(source)
    command = [sys.executable, "-m", "autocustom", "import", str(source), "--axis", "formal:casual",
               "--out", str(args.out / "data"), "--json"]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    seconds = time.monotonic() - started
    report = json.loads(done.stdout)
    print(f"{n} rows imported in {seconds:.1f} s (process start, embedder load and clustering included)")
    print(json.dumps(report["counts"], indent=1))
    for subarea in report["subareas"]:
        print(f"  {subarea['id']}: {subarea['name']} ({subarea['description']})")


if __name__ == "__main__":
    main()
