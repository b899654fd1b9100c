#!/usr/bin/env python3
"""Reference learning rates for `rlhf_train::schedule` tests (dev-only; NOT run by CI).

Drives the real `transformers` schedulers (LambdaLR over a one-parameter SGD) and prints
`lr` before each optimiser step, i.e. what `LrSchedule::lr_at(step)` must return, plus
`TrainingArguments.get_warmup_steps` for a few warmup ratios. The numbers printed are
pasted as literals into crates/rlhf-train/src/schedule.rs.

Usage: /work/venv/bin/python scripts/lr_schedule_reference.py
"""

import torch
from transformers import TrainingArguments
from transformers.optimization import (
    get_constant_schedule,
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

BASE_LR, WARMUP, TOTAL, STEPS = 3e-4, 3, 10, 12


def lrs(make):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    sched = make(opt)
    out = []
    for _ in range(STEPS):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


cases = {
    "constant": lambda o: get_constant_schedule(o),
    "constant_with_warmup": lambda o: get_constant_schedule_with_warmup(o, WARMUP),
    "linear": lambda o: get_linear_schedule_with_warmup(o, WARMUP, TOTAL),
    "cosine": lambda o: get_cosine_schedule_with_warmup(o, WARMUP, TOTAL),
    "linear_no_warmup": lambda o: get_linear_schedule_with_warmup(o, 0, TOTAL),
    "cosine_no_warmup": lambda o: get_cosine_schedule_with_warmup(o, 0, TOTAL),
}
for name, make in cases.items():
    print(name, "[" + ", ".join(repr(x) for x in lrs(make)) + "]")

for ratio, total in [(0.1, 1000), (0.03, 333), (0.05, 7), (0.0, 50), (0.5, 3)]:
    args = TrainingArguments(output_dir="/tmp/lr_ref", warmup_steps=ratio, report_to=[])
    print("warmup_ratio", ratio, total, args.get_warmup_steps(total))
