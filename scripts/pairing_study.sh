#!/usr/bin/env bash
# Independent against rewrite pairing at the demo's sizes: each dataset's pair check (inspect) and the
# held-out BiasShift after the same 30-step training (docs/results.md, "Independent or rewritten pairs").
# The rewrite dataset starts from the independent one's call cache, so both hold the same subareas and
# questions (the same calls, answered from the cache) and differ only in how the answers were paired.
#   usage: bash scripts/pairing_study.sh formal:casual formal runs/pairing/formal
set -euo pipefail
axis=$1 toward=$2 out=$3
bin=${BIN:-.venv/bin}
sizes=(--subareas 10 --questions-per-subarea 6 --split 0.4,0.3,0.3)  # the Makefile's demo sizes
for pairing in independent rewrite; do
  dir=$out/$pairing
  mkdir -p "$dir"
  if [[ $pairing == rewrite && ! -e $dir/data ]]; then
    mkdir -p "$dir/data" && cp "$out/independent/data/cache.sqlite" "$dir/data/"
  fi
  start=$SECONDS
  "$bin/autocustom" generate --axis "$axis" --out "$dir/data" "${sizes[@]}" --pairing "$pairing" --json > "$dir/generate.json"
  echo "$pairing generate: $((SECONDS - start)) s"
  start=$SECONDS
  "$bin/autocustom" inspect "$dir/data" --json > "$dir/inspect.json"
  echo "$pairing inspect: $((SECONDS - start)) s"
  start=$SECONDS
  "$bin/autocustom" train --data "$dir/data" --toward "$toward" --out "$dir/train" --max-steps 30 --eval-steps 10 --json > "$dir/train.json"
  echo "$pairing train: $((SECONDS - start)) s"
  start=$SECONDS
  "$bin/autocustom" shift-score --model "$dir/train" --data "$dir/data" --toward "$toward" --json > "$dir/score.json"
  echo "$pairing shift-score: $((SECONDS - start)) s"
done
