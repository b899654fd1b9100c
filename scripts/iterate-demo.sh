#!/usr/bin/env bash
# Two rounds of iterative RLHF on the default model with `rlhf serve` as the AI judge: the
# quickstart's SFT model is the starting policy; each round collects 4 answers to 32 prompts,
# the base SmolLM2-135M behind `rlhf serve` judges every pair in both orders from its
# top_logprobs (it answers "A" to nearly everything, so text verdicts would be all ties),
# then reward model (with 10% replay) → PPO with the reference reset → eval (win rate vs the
# SFT model, KL, length, verifier accuracy) → report.html.
# Needs the quickstart's run folder (./scripts/quickstart.sh) for the SFT model and prompts.
set -euo pipefail
cd "$(dirname "$0")/.."
RLHF="${RLHF:-./target/release/rlhf}"
QS="${QS:-runs/quickstart}"
RUN="${RUN:-runs/iterate-demo}"
PORT="${PORT:-8011}"
if [ -e "$RUN" ]; then
  echo "error: $RUN exists; remove it or set RUN=another/folder" >&2
  exit 1
fi
for need in "$QS/sft/final" "$QS/data/prompts.jsonl" "$QS/data/prompts_eval.jsonl"; do
  [ -e "$need" ] || { echo "error: $need is missing: run ./scripts/quickstart.sh first (or set QS)" >&2; exit 1; }
done
"$RLHF" serve --model default --port "$PORT" >"${TMPDIR:-/tmp}/rlhf-iterate-judge.log" 2>&1 &
judge=$!
trap 'kill $judge 2>/dev/null || true' EXIT
for _ in $(seq 60); do
  curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null && break
  sleep 1
done
"$RLHF" iterate --config examples/iterate.toml --rounds 2 \
  --set "policy=\"$QS/sft/final\"" --set "out=\"$RUN\"" \
  --set "prompts=\"$QS/data/prompts.jsonl\"" --set prompts_per_round=32 --set max_new_tokens=48 \
  --set "preferences.url=\"http://127.0.0.1:$PORT/v1\"" --set 'preferences.verdict="logprobs"' \
  --set 'reward.set=["data.eval_path=\"\"", "data.eval_fraction=0.1", "train.max_steps=20", "train.batch_size=4", "train.save_steps=0", "stats_examples=32"]' \
  --set 'rl.set=["train.max_steps=8", "train.save_steps=0", "eval_steps=0", "data.eval_path=\"\""]' \
  --set "eval.prompts=\"$QS/data/prompts_eval.jsonl\"" --set eval.limit=60
echo
echo "report: $RUN/report.html"
