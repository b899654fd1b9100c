#!/usr/bin/env bash
# The human-feedback loop on the default model, with two scripted annotators standing in for
# people: collect K=4 responses for 20 arithmetic prompts → serve the labelling app → annotators
# rank through the real HTTP API (an arithmetic grader, and a noisy one that ranks half its
# items at random) → agreement statistics → export pairs → train a reward model on them, then
# measure it on 20 held-out problems whose answers are ranked by correctness.
# Afterwards, `rlhf label serve --db $RUN/labels.db` and the printed admin token show the same
# run in the browser.
set -euo pipefail
cd "$(dirname "$0")/.."
RLHF="${RLHF:-./target/release/rlhf}"
RUN="${RUN:-runs/label-demo}"
PORT="${PORT:-8765}"
if [ -e "$RUN" ]; then
  echo "error: $RUN exists; remove it or set RUN=another/folder" >&2
  exit 1
fi
db="$RUN/labels.db"
step() { echo; echo "== $* =="; }

step "prompts: arithmetic word problems with reference answers"
"$RLHF" data make arithmetic --n 200 --seed 3 --out "$RUN/data" >/dev/null

step "collect: 20 prompts × 4 responses at temperatures 0.6, 0.8, 1.0, 1.2"
"$RLHF" collect --model default --prompts "$RUN/data/prompts.jsonl" --limit 20 --k 4 \
  --temperatures 0.6,0.8,1.0,1.2 --max-new-tokens 96 --db "$db"

grader=$("$RLHF" label add-annotator --db "$db" --name grader 2>/dev/null)
noisy=$("$RLHF" label add-annotator --db "$db" --name noisy 2>/dev/null)
admin=$("$RLHF" label add-annotator --db "$db" --name lead --admin 2>/dev/null)
echo "admin token (sign in at http://127.0.0.1:$PORT): $admin"

step "serve: every item to both annotators (--overlap 1)"
"$RLHF" label serve --db "$db" --port "$PORT" --overlap 1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/" >/dev/null && break; sleep 0.1; done

step "annotate through the HTTP API"
"$RLHF" label simulate --url "http://127.0.0.1:$PORT" --token "$grader" --answers "$RUN/data/prompts.jsonl"
"$RLHF" label simulate --url "http://127.0.0.1:$PORT" --token "$noisy" --answers "$RUN/data/prompts.jsonl" --noise 0.5 --seed 1

step "agreement"
"$RLHF" label stats --db "$db"

step "export: rankings → C(K,2) pairs (ties dropped)"
"$RLHF" label export --db "$db" --format pairs --out "$RUN/pairs.jsonl"
"$RLHF" label export --db "$db" --format rankings --out "$RUN/rankings.jsonl"

step "reward model on the exported pairs (one epoch), held-out accuracy on 20 unseen problems"
"$RLHF" reward --config examples/reward.toml --model default --out "$RUN/reward" \
  --data "$RUN/pairs.jsonl" --eval-data "$RUN/data/rankings_eval.jsonl" \
  --set train.batch_size=8 --set train.save_steps=0 --set stats_examples=32
