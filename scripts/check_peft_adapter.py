#!/usr/bin/env python3
"""Dev-only check (NOT run by CI) of LoRA adapters between rlhf and Python `peft`,
both ways:

1. `peft` loads the adapter written by `CausalLm::save_lora` onto the HF folder
   written by `CausalLm::save_hf` and reproduces rlhf's logits;
2. it writes an adapter of its own (random B) to DIR/peft_adapter with its logits
   in DIR/peft_expected.json, which the ignored Rust test
   `reads_an_adapter_written_by_peft` then loads and compares.

    export RLHF_PEFT_CHECK_DIR=/tmp/peft-check
    cargo test -p rlhf-model --test lora write_peft_check_fixture -- --ignored
    python scripts/check_peft_adapter.py $RLHF_PEFT_CHECK_DIR
    cargo test -p rlhf-model --test lora reads_an_adapter_written_by_peft -- --ignored

Needs torch, transformers and peft (e.g. /work/venv). Exit status 1 if
max |logit diff| > 1e-4.
"""
import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
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
    write_peft_adapter(root, ids)
    return 0 if max(diff, merged_diff) <= 1e-4 and base_diff > 1e-2 else 1


def write_peft_adapter(root: str, ids: torch.Tensor) -> None:
    """A PEFT-initialised adapter with non-zero B, for rlhf to read back."""
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(os.path.join(root, "base"), dtype=torch.float32)
    cfg = LoraConfig(r=3, lora_alpha=5, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"])
    model = get_peft_model(base, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.3)
    model.eval().save_pretrained(os.path.join(root, "peft_adapter"))
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    out = {"input_ids": ids[0].tolist(), "logits": logits.tolist()}
    json.dump(out, open(os.path.join(root, "peft_expected.json"), "w"))
    print("wrote peft_adapter/ and peft_expected.json")


if __name__ == "__main__":
    sys.exit(main())
