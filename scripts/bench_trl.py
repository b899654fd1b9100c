#!/usr/bin/env python3
"""Dev-only: TRL step time and peak memory for SFT, reward model and DPO at the shapes
`rlhf bench --sections sft,reward,dpo` uses (batch 4; 64 prompt + 64 response tokens), fp32 on
the CPU, so the two can be compared in the same minutes on one machine.

    python scripts/bench_trl.py --model /tmp/smollm2-hf --trainer sft
    (the HF folder from `rlhf convert --model default --out /tmp/smollm2-hf`; needs trl 1.16)

Each trainer should run in its own process so its peak RSS is its own; prints one JSON line.
"""

import argparse
import json
import resource
import statistics
import time

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

BATCH, HALF = 4, 64


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
    ap.add_argument("--trainer", choices=["sft", "reward", "dpo"], required=True)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(a.model)
    n = BATCH * (a.steps + 1)
    prompt = text_of(tok, HALF, "apple")
    good = text_of(tok, HALF - 1, "banana")  # + EOS appended by TRL
    bad = text_of(tok, HALF - 1, "cherry")
    common = dict(
        output_dir="/tmp/trl-bench", per_device_train_batch_size=BATCH, max_steps=a.steps + 1, use_cpu=True,
        bf16=False, fp16=False, report_to=[], save_strategy="no", logging_steps=1000, dataloader_num_workers=0,
        max_length=2 * HALF,
    )
    timer = StepTimer()
    if a.trainer == "sft":
        from trl import SFTConfig, SFTTrainer

        ds = Dataset.from_list([{"prompt": prompt, "completion": good}] * n)
        model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32)
        trainer = SFTTrainer(model=model, args=SFTConfig(**common), train_dataset=ds, processing_class=tok,
                             callbacks=[timer])
    elif a.trainer == "reward":
        from trl import RewardConfig, RewardTrainer

        ds = Dataset.from_list([{"prompt": prompt, "chosen": good, "rejected": bad}] * n)
        model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=1, torch_dtype=torch.float32)
        model.config.pad_token_id = tok.pad_token_id
        trainer = RewardTrainer(model=model, args=RewardConfig(**common), train_dataset=ds, processing_class=tok,
                                callbacks=[timer])
    else:
        from trl import DPOConfig, DPOTrainer

        ds = Dataset.from_list([{"prompt": prompt, "chosen": good, "rejected": bad}] * n)
        model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32)
        trainer = DPOTrainer(model=model, args=DPOConfig(**common), train_dataset=ds, processing_class=tok,
                             callbacks=[timer])
    trainer.train()
    steps = timer.times[1:]
    print(json.dumps({
        "framework": "trl", "trainer": a.trainer, "batch": BATCH, "seq_len": 2 * HALF,
        "step_s": statistics.median(steps), "samples_s": steps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
