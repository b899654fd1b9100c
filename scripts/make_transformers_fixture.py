#!/usr/bin/env python3
"""Reference fixture generator for `rlhf` (dev-only; NOT run by CI).

Loads SmolLM2-135M-Instruct with Hugging Face transformers (float32, eval mode,
CPU, 2 threads) and writes `fixtures/smollm2_transformers.json`, which the Rust
test-suite compares against:

* ``logprobs``   -- per-token log-probabilities (and top-5) for three texts,
* ``greedy``     -- greedy 32-token continuations of three chat prompts,
* ``tokenizer``  -- token ids for ~25 awkward strings,
* ``chat_template`` -- rendered ChatML prompts.

By default the model is read from the GGUF file (transformers de-quantises the
Q4_1/Q8_0 tensors and reverses llama.cpp's Q/K row permutation itself).

Usage (from the repository root, with a Python that has torch, transformers,
accelerate, gguf and numpy installed, e.g. /work/venv):

    # regenerate the committed fixture from the GGUF file
    python scripts/make_transformers_fixture.py [PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf]

    # check that an HF folder (config.json + model.safetensors + tokenizer.json),
    # e.g. one written by `rlhf convert`, loads in transformers and reproduces
    # the fixture's log-probabilities (exit status 1 if max |diff| > 1e-4)
    python scripts/make_transformers_fixture.py --hf-dir OUT_DIR \
        --compare fixtures/smollm2_transformers.json

If no GGUF path is given, ``$RLHF_HOME/models/SmolLM2-135M-Instruct.Q4_1.gguf``
is used (RLHF_HOME defaults to ~/.cache/rlhf).  No network access is needed:
HF_HUB_OFFLINE=1 is forced.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import datetime
import hashlib
import importlib.metadata
import json
import math
import platform
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "fixtures" / "smollm2_transformers.json"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EOS_ID = 2
GREEDY_NEW_TOKENS = 32
TOP_K = 5
COMPARE_TOL = 1e-4

# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------

PLAIN_TEXT = (
    "The quick brown fox jumps over the lazy dog, and then it runs back "
    "into the forest to find its friends before the sun goes down."
)

CODE_TEXT = (
    "def fibonacci(n):\n"
    "    a, b = 0, 1\n"
    "    for _ in range(n):\n"
    "        a, b = b, a + b\n"
    "    return a\n"
)

CHAT_MESSAGES = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Name a primary colour."},
    {"role": "assistant", "content": "Red is a primary colour."},
]

GREEDY_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "What is 12 + 35?",
]

TOKENIZER_STRINGS = [
    "Hello world",
    "Hello, world!",
    " leading space",
    "trailing space ",
    "multiple   spaces    here",
    "line one\nline two\n\nline four",
    "\ttab\tseparated\tvalues",
    "12345",
    "3.14159",
    "I have 12 apples and 1000000 oranges in 2024.",
    "I'm sure you're right, they'll see it's fine; we've done it, she'd agree.",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber \u00c5ngstr\u00f6m",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3068\u4e2d\u6587\u5b57\u7b26",
    "emoji: \U0001f600\U0001f680 \u2764\ufe0f \U0001f44d\U0001f3fd",
    "def f(x):\n    if x > 0:\n        return x * 2\n    return -x\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "<|im_start|>user\nHi there<|im_end|>\n",
    "text before <|im_end|> text after",
    "",
    " ",
    "\n\n\n",
    "ALL CAPS AND lower case MiXeD",
    "https://example.com/path?query=1&x=y#frag",
    "a=b+c*d/e-f%g^h|i&j~k",
    "    four spaces indent then \u00a0nbsp and \u2014 em dash \u2026",
]


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def default_gguf_path() -> Path:
    home = os.environ.get("RLHF_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache", "rlhf"
    )
    return Path(home) / "models" / GGUF_NAME


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pkg_version(name: str):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def load(args):
    """Return (model, tokenizer, source-dict)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.hf_dir:
        d = Path(args.hf_dir).resolve()
        tok = AutoTokenizer.from_pretrained(str(d))
        model = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32)
        src = {"kind": "hf_dir", "path": str(d)}
        st = d / "model.safetensors"
        if st.exists():
            src["model_safetensors_sha256"] = sha256_file(st)
    else:
        p = Path(args.gguf) if args.gguf else default_gguf_path()
        p = p.expanduser().resolve()
        if not p.is_file():
            sys.exit(
                f"GGUF file not found: {p}\n"
                "Pass its path as the first argument or set RLHF_HOME."
            )
        tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(p.parent), gguf_file=p.name, dtype=torch.float32
        )
        src = {"kind": "gguf", "file": p.name, "gguf_sha256": sha256_file(p)}
    # (No .float(): transformers flags GGUF-loaded models as "quantized" and
    # refuses it, although the weights are already de-quantised to float32.)
    model.eval()
    bad = {p.dtype for p in model.parameters() if p.dtype != torch.float32}
    if bad:
        sys.exit(f"expected float32 parameters, found {bad}")
    return model, tok, src


@torch.no_grad()
def token_logprobs(model, ids, top_k):
    """Logprob of ids[t] given ids[:t] for t >= 1, plus top-k per position.

    The model runs in float32; log_softmax is taken in float64 on the float32
    logits.
    """
    x = torch.tensor([ids], dtype=torch.long)
    logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0]
    lp = torch.log_softmax(logits.double(), dim=-1)  # [T, V]
    tgt = torch.tensor(ids[1:], dtype=torch.long)
    chosen = lp[:-1].gather(1, tgt[:, None])[:, 0]
    out = {"logprobs": [float(v) for v in chosen]}
    if top_k:
        tv, ti = lp[:-1].topk(top_k, dim=-1)
        out["top5"] = [
            {"ids": [int(i) for i in ti[t]], "logprobs": [float(v) for v in tv[t]]}
            for t in range(len(ids) - 1)
        ]
    return out


@torch.no_grad()
def greedy(model, prompt_ids, n_new):
    x = torch.tensor([prompt_ids], dtype=torch.long)
    out = model.generate(
        input_ids=x,
        attention_mask=torch.ones_like(x),
        do_sample=False,
        max_new_tokens=n_new,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
        temperature=None,
        top_p=None,
        top_k=None,
    )
    new_ids = [int(i) for i in out[0, len(prompt_ids):]]
    # Teacher-forced pass over prompt+continuation: logprob of each generated
    # token and the top1-top2 gap (small gaps mean ties an implementation may
    # legitimately break differently).
    full = prompt_ids + new_ids
    y = torch.tensor([full], dtype=torch.long)
    logits = model(input_ids=y, attention_mask=torch.ones_like(y)).logits[0]
    lp = torch.log_softmax(logits.double(), dim=-1)
    n = len(prompt_ids)
    new_lp, margins = [], []
    for j, tid in enumerate(new_ids):
        row = lp[n - 1 + j]
        top2 = row.topk(2).values
        new_lp.append(float(row[tid]))
        margins.append(float(top2[0] - top2[1]))
    return new_ids, new_lp, margins


def build_fixture(model, tok, src, top_k):
    from transformers import __version__ as tf_version

    ts = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    bos_probe = tok("a").input_ids
    fixture = {
        "source": {
            **src,
            "torch": torch.__version__,
            "transformers": tf_version,
            "gguf": pkg_version("gguf"),
            "tokenizers": pkg_version("tokenizers"),
            "accelerate": pkg_version("accelerate"),
            "python": platform.python_version(),
            "date": ts.isoformat(),
            "dtype": "float32",
            "logprob_computation": "float32 forward pass; log_softmax in float64 over the float32 logits",
            "add_special_tokens": False,
            "tokenizer_default_adds_bos": bool(
                tok.bos_token_id is not None and bos_probe[:1] == [tok.bos_token_id]
            ),
            "bos_token": tok.bos_token,
            "eos_token": tok.eos_token,
            "pad_token": tok.pad_token,
        },
        "model": {
            k: getattr(model.config, k, None)
            for k in (
                "vocab_size",
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "head_dim",
                "rms_norm_eps",
                "max_position_embeddings",
                "tie_word_embeddings",
                "bos_token_id",
                "eos_token_id",
            )
        },
    }
    rope = getattr(model.config, "rope_parameters", None) or {}
    fixture["model"]["rope_theta"] = rope.get(
        "rope_theta", getattr(model.config, "rope_theta", None)
    )

    chat_text = tok.apply_chat_template(CHAT_MESSAGES, tokenize=False)
    texts = [("plain", PLAIN_TEXT), ("code", CODE_TEXT), ("chat", chat_text)]
    fixture["logprobs"] = []
    for name, text in texts:
        ids = tok(text, add_special_tokens=False).input_ids
        entry = {
            "name": name,
            "text": text,
            "add_special_tokens": False,
            "ids": ids,
            "tokens": tok.convert_ids_to_tokens(ids),
        }
        entry.update(token_logprobs(model, ids, top_k))
        fixture["logprobs"].append(entry)
        print(f"[logprobs] {name}: {len(ids)} tokens, "
              f"mean logprob {sum(entry['logprobs']) / len(entry['logprobs']):.4f}",
              file=sys.stderr)

    fixture["greedy"] = []
    for user in GREEDY_PROMPTS:
        msgs = [{"role": "user", "content": user}]
        prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        ids = tok(prompt, add_special_tokens=False).input_ids
        new_ids, new_lp, margins = greedy(model, ids, GREEDY_NEW_TOKENS)
        text = tok.decode(new_ids, skip_special_tokens=False)
        fixture["greedy"].append({
            "messages": msgs,
            "prompt": prompt,
            "ids": ids,
            "max_new_tokens": GREEDY_NEW_TOKENS,
            "eos_token_id": EOS_ID,
            "new_ids": new_ids,
            "text": text,
            "new_logprobs": new_lp,
            "top1_top2_margins": margins,
        })
        print(f"[greedy] {user!r} -> {text!r}", file=sys.stderr)

    fixture["tokenizer"] = []
    for s in TOKENIZER_STRINGS:
        ids = tok(s, add_special_tokens=False).input_ids
        fixture["tokenizer"].append({
            "text": s,
            "ids": ids,
            "tokens": tok.convert_ids_to_tokens(ids),
            "decoded": tok.decode(ids, skip_special_tokens=False),
        })

    hi = [{"role": "user", "content": "Hi"}]
    hi_prompt = tok.apply_chat_template(hi, tokenize=False, add_generation_prompt=True)
    conv_prompt = tok.apply_chat_template(CHAT_MESSAGES, tokenize=False)
    fixture["chat_template"] = {
        "template": tok.chat_template,
        "cases": [
            {
                "messages": hi,
                "add_generation_prompt": True,
                "rendered": hi_prompt,
                "ids": tok(hi_prompt, add_special_tokens=False).input_ids,
            },
            {
                "messages": CHAT_MESSAGES,
                "add_generation_prompt": False,
                "rendered": conv_prompt,
                "ids": tok(conv_prompt, add_special_tokens=False).input_ids,
            },
        ],
    }
    return fixture


def compare(model, tok, fixture_path, strict):
    ref = json.loads(Path(fixture_path).read_text())
    ok = True
    worst = 0.0
    for e in ref["logprobs"]:
        got = token_logprobs(model, e["ids"], 0)["logprobs"]
        d = max(abs(a - b) for a, b in zip(got, e["logprobs"]))
        worst = max(worst, d)
        print(f"logprobs[{e.get('name', '?')}]: {len(e['ids'])} tokens, max |diff| = {d:.3e}")
    print(f"max abs logprob difference: {worst:.3e} (tolerance {COMPARE_TOL:g})")
    if not (worst <= COMPARE_TOL) or math.isnan(worst):
        ok = False

    # Tokenizer / greedy checks: reported, fatal only with --strict.
    mism = 0
    for e in ref["tokenizer"]:
        ids = tok(e["text"], add_special_tokens=False).input_ids
        if ids != e["ids"]:
            mism += 1
            print(f"WARN tokenizer mismatch for {e['text']!r}: {ids} != {e['ids']}")
    for e in ref["logprobs"]:
        ids = tok(e["text"], add_special_tokens=False).input_ids
        if ids != e["ids"]:
            mism += 1
            print(f"WARN tokenizer mismatch for logprobs text {e.get('name')!r}")
    for e in ref["greedy"]:
        new_ids, _, _ = greedy(model, e["ids"], e["max_new_tokens"])
        if new_ids != e["new_ids"]:
            mism += 1
            print(f"WARN greedy mismatch for {e['messages'][-1]['content']!r}: "
                  f"{tok.decode(new_ids)!r} != {e['text']!r}")
    print(f"tokenizer/greedy mismatches: {mism}")
    if strict and mism:
        ok = False
    print("OK" if ok else "FAIL")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("gguf", nargs="?", help=f"path to {GGUF_NAME} "
                    "(default: $RLHF_HOME/models/...; RLHF_HOME=~/.cache/rlhf)")
    ap.add_argument("--hf-dir", help="load an HF folder (config.json, "
                    "model.safetensors, tokenizer.json) instead of the GGUF")
    ap.add_argument("--compare", metavar="FIXTURE", help="compare logprobs "
                    "against an existing fixture instead of writing one; exit 1 "
                    f"if max |diff| > {COMPARE_TOL:g}")
    ap.add_argument("--strict", action="store_true", help="with --compare, "
                    "also fail on tokenizer or greedy-continuation mismatches")
    ap.add_argument("--out", help="output path (default: fixtures/"
                    "smollm2_transformers.json when reading the GGUF without "
                    "--compare; otherwise nothing is written unless given)")
    ap.add_argument("--no-top5", action="store_true", help="omit top-5 lists")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model, tok, src = load(args)

    rc = 0
    if args.compare:
        rc = compare(model, tok, args.compare, args.strict)
    out = args.out
    if out is None and not args.compare and not args.hf_dir:
        out = str(DEFAULT_OUT)
    if out:
        fixture = build_fixture(model, tok, src, 0 if args.no_top5 else TOP_K)
        text = json.dumps(fixture, indent=2, ensure_ascii=False) + "\n"
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text, encoding="utf-8")
        print(f"wrote {out} ({len(text.encode('utf-8'))} bytes)", file=sys.stderr)
    elif not args.compare:
        print("nothing to do: give --out or --compare", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
