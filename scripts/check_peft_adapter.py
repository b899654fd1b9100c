#!/usr/bin/env python3
"""Dev-only check (NOT run by CI) that Python `peft` loads an adapter written by
`CausalLm::save_lora` onto the HF folder written by `CausalLm::save_hf` and
reproduces rlhf's logits.

    RLHF_PEFT_CHECK_DIR=/tmp/peft-check cargo test -p rlhf-model --test lora -- --ignored
    python scripts/check_peft_adapter.py /tmp/peft-check

Needs torch, transformers and peft (e.g. /work/venv). Exit status 1 if
max |logit diff| > 1e-4.
"""
import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
from peft import PeftModel  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402


def main() -> int:
    root = sys.argv[1]
    expected = json.load(open(os.path.join(root, "expected.json")))
    base = AutoModelForCausalLM.from_pretrained(os.path.join(root, "base"), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, os.path.join(root, "adapter")).eval()
    ids = torch.tensor([expected["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    diff = (logits - torch.tensor(expected["logits"])).abs().max().item()
    with torch.no_grad(), model.disable_adapter():
        base_diff = (model(input_ids=ids).logits[0] - torch.tensor(expected["logits"])).abs().max().item()
    # The adapter must matter, or a silently ignored adapter would pass.
    print(f"base model without the adapter differs by {base_diff:.3e}")
    merged = model.merge_and_unload()
    with torch.no_grad():
        merged_diff = (merged(input_ids=ids).logits[0] - torch.tensor(expected["logits"])).abs().max().item()
    print(f"peft vs rlhf: max |logit diff| = {diff:.3e}; after merge_and_unload: {merged_diff:.3e}")
    return 0 if max(diff, merged_diff) <= 1e-4 and base_diff > 1e-2 else 1


if __name__ == "__main__":
    sys.exit(main())
