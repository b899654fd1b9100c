#!/usr/bin/env python3
"""Reads a run's TensorBoard event files with TensorBoard's own loader (dev-only; NOT run by CI).

Checks that the hand-written files of `rlhf_train::tensorboard` parse, and prints every scalar.

Usage: /work/venv/bin/python scripts/check_tensorboard_events.py RUN_DIR/tb
"""

import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

acc = EventAccumulator(sys.argv[1])
acc.Reload()
tags = acc.Tags()["scalars"]
if not tags:
    sys.exit("no scalars found")
for tag in tags:
    for event in acc.Scalars(tag):
        print(f"{tag}\tstep={event.step}\tvalue={event.value!r}\twall_time={event.wall_time:.3f}")
