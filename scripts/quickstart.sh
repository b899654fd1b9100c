#!/usr/bin/env bash
# The seed pipeline on the default model, on CPU: generated arithmetic data → SFT → reward
# model → PPO against the reward model and GRPO against the answer verifier → one table of
# held-out accuracy, reward-model score, KL and length for the base, SFT and RL models.
# Sizes are small so the whole run fits in about 20 minutes on 2 cores; every run folder under
# $RUN keeps its config.toml, metrics.jsonl, TensorBoard events, checkpoints and final model.
set -euo pipefail
cd "$(dirname "$0")/.."
RLHF="${RLHF:-./target/release/rlhf}"
RUN="${RUN:-runs/quickstart}"
if [ -e "$RUN" ]; then
  echo "error: $RUN exists; remove it or set RUN=another/folder" >&2
  exit 1
fi
data="$RUN/data"
step() { echo; echo "== $* =="; }

step "data: 600 arithmetic problems (540 train / 60 held out)"
"$RLHF" data make arithmetic --n 600 --seed 0 --out "$data" >/dev/null

step "SFT on demonstrations (prompt tokens masked)"
"$RLHF" sft --config examples/sft.toml --out "$RUN/sft" \
  --data "$data/sft.jsonl" --eval-data "$data/sft_eval.jsonl" \
  --set train.max_steps=40 --set train.save_steps=0

step "reward model (Bradley–Terry on K=4 rankings → C(4,2) pairs) from the SFT model"
"$RLHF" reward --config examples/reward.toml --model "$RUN/sft/final" --out "$RUN/reward" \
  --data "$data/rankings.jsonl" --eval-data "$data/rankings_eval.jsonl" \
  --set train.batch_size=2 --set train.max_steps=30 --set train.save_steps=0 --set stats_examples=64

step "PPO against the reward model (critic from the reward model, KL to the SFT model)"
"$RLHF" ppo --config examples/ppo.toml --model "$RUN/sft/final" --out "$RUN/ppo" \
  --data "$data/prompts.jsonl" --eval-data "$data/prompts_eval.jsonl" \
  --set critic.model="$RUN/reward/final" --set "rewards=[{kind=\"reward_model\", path=\"$RUN/reward/final\"}]" \
  --set train.max_steps=12 --set train.learning_rate=4e-6 --set train.save_steps=0 --set eval_steps=0 \
  --set ppo.ppo_epochs=2 --set eval.limit=60

step "GRPO against the answer verifier (G = 8)"
"$RLHF" grpo --config examples/grpo.toml --model "$RUN/sft/final" --out "$RUN/grpo" \
  --data "$data/prompts.jsonl" --eval-data "$data/prompts_eval.jsonl" \
  --set "rewards=[{kind=\"math\"}]" --set eval.reward.kind=math --set rollout.max_new_tokens=48 \
  --set train.max_steps=50 --set train.save_steps=0 --set eval_steps=0 --set eval.limit=60 --set eval.max_new_tokens=48

step "held-out comparison (60 prompts; KL to the SFT model on sampled answers)"
"$RLHF" eval --prompts "$data/prompts_eval.jsonl" --limit 60 --reward-model "$RUN/reward/final" \
  --reference "$RUN/sft/final" --out "$RUN/eval.jsonl" \
  --model base=default --model sft="$RUN/sft/final" --model ppo="$RUN/ppo/final" --model grpo="$RUN/grpo/final"
