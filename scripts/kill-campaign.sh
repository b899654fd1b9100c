#!/usr/bin/env bash
# Kill campaign for online RL: runs `rlhf grpo`, `rlhf ppo` or `rlhf raft` once without
# interruption, then again under SIGKILL at KILLS random moments (during sampling, updates and
# checkpoint writes: a checkpoint every step, or RAFT round), resuming with --resume after each
# kill, and checks that the final model, the metrics (all but wall-clock fields) and
# samples.jsonl equal the uninterrupted run's.
#
#   scripts/kill-campaign.sh grpo|ppo|raft [KILLS=20] [SEED=1]
#
# Needs the release binary (cargo build --release) and the default model
# (scripts/fetch-default-model.sh). Work goes to $WORK (default: a temporary folder).
set -euo pipefail
cd "$(dirname "$0")/.."
trainer="${1:?usage: scripts/kill-campaign.sh grpo|ppo|raft [KILLS] [SEED]}"
kills="${2:-20}"
RANDOM="${3:-1}"
RLHF="${RLHF:-./target/release/rlhf}"
WORK="${WORK:-$(mktemp -d)}"
mkdir -p "$WORK"
# Two runs of the default model with their checkpoints and models: a full disk would show up as
# a run failing in the middle of the campaign (seen: "No space left on device").
need_gb=12
free_gb=$(df -Pk "$WORK" | awk 'NR == 2 {print int($4 / 1048576)}')
if [ "$free_gb" -lt "$need_gb" ]; then
  echo "error: $WORK has ${free_gb} GB free; a campaign needs about ${need_gb} GB" >&2
  exit 1
fi

final=final # the model to compare, in the run folder
# The campaign's own copy of the example config: editing the repository meanwhile changes nothing.
cp "examples/$trainer.toml" "$WORK/$trainer.toml" 2>/dev/null || true
case "$trainer" in
grpo)
  "$RLHF" data make sums --seed 0 --out "$WORK/data" >/dev/null
  args=(grpo --config "$WORK/grpo.toml" --set "data.path=$WORK/data/prompts.jsonl"
    --set "data.eval_path=$WORK/data/prompts_eval.jsonl" --set train.max_steps=12
    --set train.save_steps=1 --set eval_steps=4 --set eval.limit=8 --set grpo.beta=0.04
    --set grpo.num_iterations=2)
  ;;
ppo)
  "$RLHF" data make arithmetic --n 200 --seed 0 --out "$WORK/data" >/dev/null
  args=(ppo --config "$WORK/ppo.toml" --set "data.path=$WORK/data/prompts.jsonl"
    --set "data.eval_path=$WORK/data/prompts_eval.jsonl" --set critic.model=
    --set 'rewards=[{kind="math"}]' --set train.max_steps=12 --set train.save_steps=1
    --set eval_steps=4 --set eval.limit=8 --set ppo.prompts_per_step=4 --set ppo.ppo_epochs=2)
  ;;
raft)
  "$RLHF" data make arithmetic --n 200 --seed 0 --out "$WORK/data" >/dev/null
  args=(raft --config "$WORK/raft.toml" --set "data.path=$WORK/data/prompts.jsonl"
    --set "data.eval_path=$WORK/data/prompts_eval.jsonl" --set raft.rounds=8
    --set raft.prompts_per_round=8 --set raft.samples_per_prompt=4 --set eval.limit=8)
  final=round-8/final
  ;;
*)
  echo "error: trainer must be grpo, ppo or raft, not $trainer" >&2
  exit 2
  ;;
esac

# What must match: the final weights, and the logs without their wall-clock fields.
fingerprint() {
  sha256sum "$1/$final"/*.safetensors | awk '{print $1}'
  python3 - "$1" <<'PY'
import json, sys
drop = ("time", "elapsed_seconds", "train_seconds", "step_time", "update/seconds")
for line in open(sys.argv[1] + "/metrics.jsonl"):
    row = json.loads(line)
    print(json.dumps({k: v for k, v in row.items()
                      if k not in drop and not k.endswith(("per_sec", "elapsed_seconds", "train_seconds"))},
                     sort_keys=True))
PY
  sha256sum "$1/samples.jsonl" | awk '{print $1}'
}

echo "== uninterrupted $trainer run"
start=$(date +%s.%N)
"$RLHF" "${args[@]}" --out "$WORK/whole" >"$WORK/whole.log" 2>&1
whole_secs=$(echo "$(date +%s.%N) - $start" | bc)
fingerprint "$WORK/whole" >"$WORK/whole.fp"
# Its start-up (loading, the first evaluation) and its steps, from its metrics.
read -r startup steps < <(python3 - "$WORK/whole/metrics.jsonl" "$start" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first = next(r for r in rows if r["step"] == 1 and "step_time" in r)
print("%.2f" % (first["time"] - first["step_time"] - float(sys.argv[2])), max(r["step"] for r in rows))
PY
)
echo "   $(printf '%.1f' "$whole_secs") s: $steps steps after $startup s of start-up"

echo "== the same run killed $kills times"
run="$WORK/killed"
n=0
completed=0
while true; do
  resume=()
  if compgen -G "$run/checkpoints/step-*/state.json" >/dev/null; then
    resume=(--resume "$run")
  fi
  touch "$WORK/started"
  "$RLHF" "${args[@]}" --out "$run" "${resume[@]}" >>"$WORK/killed.log" 2>&1 &
  pid=$!
  if [ "$n" -ge "$kills" ]; then
    wait "$pid" && completed=1
    break
  fi
  # A random moment within start-up and twice the run time left per kill left, so that the
  # kills spread evenly over the whole run.
  done_steps=0
  if [ ${#resume[@]} -gt 0 ]; then
    newest=$(compgen -G "$run/checkpoints/step-*/state.json" | sort | tail -n 1)
    done_steps=$((10#$(basename "$(dirname "$newest")" | sed 's/step-//')))
  fi
  left_steps=$((steps - done_steps > 0 ? steps - done_steps : 1))
  left=$(echo "scale=2; $startup + 2 * ($whole_secs - $startup) / $steps * $left_steps / ($kills - $n)" | bc)
  r=$((RANDOM % 1000))
  delay=$(echo "scale=2; $r * $left / 1000" | bc)
  sleep "$delay"
  if kill -9 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || true
    n=$((n + 1))
    last=$(compgen -G "$run/checkpoints/step-*" | sort | tail -n 1 || true)
    torn=""
    if [ -n "$(find "$run" -maxdepth 2 -name '.step-*.partial' -newer "$WORK/started" 2>/dev/null)" ]; then
      torn=", killed while writing a checkpoint"
    fi
    echo "   kill $n at ${delay} s into the process (newest checkpoint: ${last##*/}$torn)"
  else
    # It had ended before the kill: the next start resumes from its last checkpoint, unless
    # it failed.
    if ! wait "$pid" 2>/dev/null; then
      echo "FAILED: a run exited with an error before its kill (see $WORK/killed.log)" >&2
      exit 1
    fi
  fi
done
if [ "$completed" != 1 ]; then
  echo "FAILED: the last resume did not complete (see $WORK/killed.log)" >&2
  exit 1
fi
fingerprint "$run" >"$WORK/killed.fp"
if cmp -s "$WORK/whole.fp" "$WORK/killed.fp"; then
  echo "PASSED: after $kills kills the final model, metrics and samples equal the uninterrupted run's"
  # Keep the logs and what was compared; the weights of a passing campaign are not needed.
  find "$WORK/whole" "$WORK/killed" -name '*.safetensors' -delete
else
  diff "$WORK/whole.fp" "$WORK/killed.fp" | head -20
  echo "FAILED: $WORK/whole and $WORK/killed differ" >&2
  exit 1
fi
