#!/usr/bin/env python3
"""Dev-only: TRL step time and peak memory for SFT, reward model and DPO at the shapes
`rlhf bench --sections sft,reward,dpo` uses (batch 4; 64 prompt + 64 response tokens), and for
GRPO at the shapes of `rlhf bench --sections grpo --completions N` (one addition prompt per step,
N completions of exactly 32 new tokens, seeded random rewards, beta 0, lr 1e-6 constant), fp32 on
the CPU, so the two can be compared in the same minutes on one machine.

    python scripts/bench_trl.py --model /tmp/smollm2-hf --trainer sft
    python scripts/bench_trl.py --model /tmp/smollm2-hf --trainer grpo --completions 4
    (the HF folder from `rlhf convert --model default --out /tmp/smollm2-hf`; needs trl 1.16)

GRPO generates inside the optimizer step (GRPOTrainer._prepare_inputs, called from
training_step), so its step times include the rollout; rollout_s is the time spent in
GRPOTrainer._generate (tokenise, sample, decode).

Each trainer should run in its own process so its peak RSS is its own; prints one JSON line.
"""

import argparse
import json
import random
import resource
import statistics
import time

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

BATCH, HALF = 4, 64
NEW_TOKENS = 32  # GRPO completion length, forced (EOS is blocked until then)


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self.t0 = [], None

    def on_step_begin(self, args, state, control, **kw):
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self.t0)


def text_of(tok, n, word):
    """A string that tokenises to exactly n tokens (checked)."""
    s = (" " + word) * n
    ids = tok(s, add_special_tokens=False)["input_ids"]
    assert len(ids) == n, (word, len(ids))
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--trainer", choices=["sft", "reward", "dpo", "grpo"], required=True)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--completions", type=int, default=4, help="GRPO: completions (of one prompt) per step")
    ap.add_argument("--prec", choices=["fp32", "amp", "bf16"], default="fp32",
                    help="fp32; amp: bf16=True (autocast over fp32 weights); bf16: also load the model in bf16")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(a.model)
    if a.trainer == "grpo":
        return grpo(a, tok)
    n = BATCH * (a.steps + 1)
    prompt = text_of(tok, HALF, "apple")
    good = text_of(tok, HALF - 1, "banana")  # + EOS appended by TRL
    bad = text_of(tok, HALF - 1, "cherry")
    common = dict(
        output_dir="/tmp/trl-bench", per_device_train_batch_size=BATCH, max_steps=a.steps + 1, use_cpu=True,
        bf16=a.prec != "fp32", fp16=False, report_to=[], save_strategy="no", logging_steps=1000, dataloader_num_workers=0,
        max_length=2 * HALF,
    )
    timer = StepTimer()
    if a.trainer == "sft":
        from trl import SFTConfig, SFTTrainer

        ds = Dataset.from_list([{"prompt": prompt, "completion": good}] * n)
        model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=dtype(a))
        trainer = SFTTrainer(model=model, args=SFTConfig(**common), train_dataset=ds, processing_class=tok,
                             callbacks=[timer])
    elif a.trainer == "reward":
        from trl import RewardConfig, RewardTrainer

        ds = Dataset.from_list([{"prompt": prompt, "chosen": good, "rejected": bad}] * n)
        model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=1, torch_dtype=dtype(a))
        model.config.pad_token_id = tok.pad_token_id
        trainer = RewardTrainer(model=model, args=RewardConfig(**common), train_dataset=ds, processing_class=tok,
                                callbacks=[timer])
    else:
        from trl import DPOConfig, DPOTrainer

        ds = Dataset.from_list([{"prompt": prompt, "chosen": good, "rejected": bad}] * n)
        model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=dtype(a))
        trainer = DPOTrainer(model=model, args=DPOConfig(**common), train_dataset=ds, processing_class=tok,
                             callbacks=[timer])
    trainer.train()
    steps = timer.times[1:]
    print(json.dumps({
        "framework": "trl", "trainer": a.trainer, "prec": a.prec, "batch": BATCH, "seq_len": 2 * HALF,
        "step_s": statistics.median(steps), "samples_s": steps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


def dtype(a):
    """The weights' dtype: bf16 for --prec bf16 ("pure bf16"), else fp32 (amp autocasts)."""
    return torch.bfloat16 if a.prec == "bf16" else torch.float32


def grpo(a, tok):
    from trl import GRPOConfig, GRPOTrainer

    g = a.completions
    rng = random.Random(0)
    prompts = []
    for _ in range(a.steps + 1):  # one prompt per optimizer step
        x, y = rng.randint(10, 99), rng.randint(10, 99)
        prompts.append({"prompt": [{"role": "user", "content": f"What is {x} + {y}? Reply with the number only."}]})
    reward_rng, lengths = random.Random(1), []

    def random_reward(completions, completion_ids, **kw):
        # Uniform in [0, 1): every group has variance, so every step does a full update.
        lengths.extend(len(ids) for ids in completion_ids)
        return [reward_rng.random() for _ in completions]

    args = GRPOConfig(
        output_dir="/tmp/trl-bench", use_cpu=True, bf16=a.prec != "fp32", fp16=False, activation_checkpointing=False,
        report_to=[], save_strategy="no", eval_strategy="no", logging_strategy="no", dataloader_num_workers=0,
        max_steps=a.steps + 1, per_device_train_batch_size=g, gradient_accumulation_steps=1, num_generations=g,
        steps_per_generation=1, num_iterations=1, beta=0.0, learning_rate=1e-6, lr_scheduler_type="constant",
        warmup_steps=0, temperature=1.0, max_completion_length=NEW_TOKENS,
        generation_kwargs={"min_new_tokens": NEW_TOKENS}, shuffle_dataset=False, log_completions=False, seed=0,
    )
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=dtype(a))
    timer = StepTimer()
    trainer = GRPOTrainer(model=model, reward_funcs=random_reward, args=args, train_dataset=Dataset.from_list(prompts),
                          processing_class=tok, callbacks=[timer])
    rollouts, generate = [], trainer._generate

    def timed_generate(*args, **kw):
        t0 = time.perf_counter()
        out = generate(*args, **kw)
        rollouts.append(time.perf_counter() - t0)
        return out

    trainer._generate = timed_generate
    trainer.train()
    assert len(lengths) == g * (a.steps + 1) and set(lengths) == {NEW_TOKENS}, sorted(set(lengths))
    steps = timer.times[1:]
    print(json.dumps({
        "framework": "trl", "trainer": "grpo", "completions": g, "new_tokens": NEW_TOKENS,
        "step_s": statistics.median(steps), "rollout_s": statistics.median(rollouts[1:]), "samples_s": steps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
