#!/usr/bin/env bash
# Two LoRA runs composed on the packaged model (docs/results.md, "Composition"): formal:casual toward
# formal and optimistic:pessimistic toward optimistic, made and trained at the demo's sizes (the lean
# check on), a third axis (conservative:progressive) measured off-axis, the grid 0,0.5,1 per run.
#   usage: bash scripts/compose_study.sh runs/compose-study
set -euo pipefail
out=$1
bin=${BIN:-.venv/bin}
sizes=(--subareas 10 --questions-per-subarea 6 --split 0.4,0.3,0.3)  # the Makefile's demo sizes
for spec in formal:casual=formal optimistic:pessimistic=optimistic conservative:progressive=; do
  axis=${spec%%=*} toward=${spec#*=} name=${spec%%:*}
  start=$SECONDS
  "$bin/autocustom" generate --axis "$axis" --out "$out/$name/data" "${sizes[@]}" --lean-judge smollm2-135m \
    > "$out/$name.generate.log" 2>&1
  echo "$name generate: $((SECONDS - start)) s"
  if [[ -n $toward ]]; then
    start=$SECONDS
    "$bin/autocustom" train --data "$out/$name/data" --toward "$toward" --out "$out/$name/lora" --lora \
      --max-steps 30 --eval-steps 10 --json > "$out/$name.train.json"
    echo "$name train (LoRA): $((SECONDS - start)) s"
  fi
done
start=$SECONDS
"$bin/autocustom" compose --run "$out/formal/lora=1" --run "$out/optimistic/lora=1" \
  --data "$out/formal/data,$out/optimistic/data,$out/conservative/data" --out "$out/compose" \
  --grid 0,0.5,1 --max-drift 0.1 --json > "$out/compose.json"
echo "compose: $((SECONDS - start)) s"
