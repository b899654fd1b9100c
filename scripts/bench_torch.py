#!/usr/bin/env python3
"""PyTorch CPU baseline for `rlhf bench` (dev-only; NOT run by CI).

Measures, with the same shapes and thread count as `rlhf bench`, in float32:

* ``matmul_gflops``       -- 1024x1024x1024 f32 matmul, GFLOP/s = 2*1024^3 / s,
* ``decode_tokens_per_s`` -- greedy KV-cached generation of exactly 128 new
                             tokens from SmolLM2-135M-Instruct at batch 1 and 8
                             (left-padded batch of identical chat prompts),
                             tokens/s = batch*128 / wall seconds of generate(),
* ``train_step``          -- one causal-LM training step at batch 4 x 128 random
                             tokens: forward, backward, AdamW(lr=1e-5) step +
                             zero_grad, timed separately, plus the process'
                             peak RSS (ru_maxrss).

Each benchmark runs in its own subprocess (so the training step's peak RSS is
its own) and prints one JSON object per line with every sample and the median;
a final ``{"summary": ...}`` line collects the medians.

Usage (from the repository root, with a Python that has torch, transformers,
accelerate, gguf and numpy installed, e.g. /work/venv):

    python scripts/bench_torch.py [PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf] \
        [--threads 2] [--only matmul|decode|train]

If no GGUF path is given, ``$RLHF_HOME/models/SmolLM2-135M-Instruct.Q4_1.gguf``
is used (RLHF_HOME defaults to ~/.cache/rlhf).  No network access is needed:
HF_HUB_OFFLINE=1 is forced.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _early_threads() -> int:
    # Thread-pool env vars must be set before torch is imported.
    n = 2
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            n = int(sys.argv[i + 1])
        elif a.startswith("--threads="):
            n = int(a.split("=", 1)[1])
    return n


_N = str(_early_threads())
os.environ["OMP_NUM_THREADS"] = _N
os.environ["MKL_NUM_THREADS"] = _N
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "Tell me a story about a robot."
EOS_ID = 2
MATMUL_N = 1024
DECODE_NEW = 128
DECODE_BATCHES = (1, 8)
TRAIN_BATCH, TRAIN_SEQ = 4, 128


def default_gguf_path() -> Path:
    home = os.environ.get("RLHF_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache", "rlhf"
    )
    return Path(home) / "models" / GGUF_NAME


def resolve_gguf(arg) -> Path:
    p = (Path(arg) if arg else default_gguf_path()).expanduser().resolve()
    if not p.is_file():
        sys.exit(f"GGUF file not found: {p}\nPass its path as the first argument or set RLHF_HOME.")
    return p


def emit(obj):
    print(json.dumps(obj), flush=True)


def peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def current_rss_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class OtherLoad:
    """Fraction of the machine's CPU capacity used by *other* processes while
    a benchmark ran (from /proc/stat minus this process' own CPU time).
    Anything much above 0 means the numbers are contaminated: with 2 OpenMP
    threads on a 2-core box, a busy neighbour slows torch down many-fold."""

    def __init__(self):
        self._start = self._read()

    @staticmethod
    def _read():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        ru = resource.getrusage(resource.RUSAGE_SELF)
        hz = os.sysconf("SC_CLK_TCK")
        total = sum(v)
        busy = total - v[3] - v[4]  # minus idle, iowait
        return total, busy, (ru.ru_utime + ru.ru_stime) * hz

    def frac(self):
        end = self._read()
        if self._start is None or end is None:
            return None
        dt = end[0] - self._start[0]
        if dt <= 0:
            return None
        other = (end[1] - self._start[1]) - (end[2] - self._start[2])
        return round(max(0.0, other / dt), 3)


DTYPE = torch.float32  # --dtype


def load_model(gguf: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=DTYPE
    )
    return model, tok


# --------------------------------------------------------------------------
# Benchmarks
# --------------------------------------------------------------------------


def bench_matmul(args):
    n = MATMUL_N
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g, dtype=torch.float32).to(DTYPE)
    b = torch.randn(n, n, generator=g, dtype=torch.float32).to(DTYPE)
    c = torch.empty(n, n, dtype=DTYPE)
    for _ in range(3):
        torch.matmul(a, b, out=c)
    mon = OtherLoad()
    secs = []
    for _ in range(max(10, args.matmul_repeats)):
        t0 = time.perf_counter()
        torch.matmul(a, b, out=c)
        secs.append(time.perf_counter() - t0)
    flop = 2.0 * n ** 3
    gflops = [flop / s / 1e9 for s in secs]
    emit({
        "bench": "matmul_gflops",
        "shape": [n, n, n],
        "dtype": str(DTYPE).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "samples_s": secs,
        "samples_gflops": gflops,
        "median_s": statistics.median(secs),
        "median": flop / statistics.median(secs) / 1e9,
        "unit": "GFLOP/s",
        "other_cpu_frac": mon.frac(),
    })


@torch.no_grad()
def bench_decode(args):
    t0 = time.perf_counter()
    model, tok = load_model(resolve_gguf(args.gguf))
    model.eval()
    load_s = time.perf_counter() - t0
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": PROMPT}], tokenize=False, add_generation_prompt=True
    )
    gen_kw = dict(
        do_sample=False,
        use_cache=True,
        max_new_tokens=DECODE_NEW,
        min_new_tokens=DECODE_NEW,
        eos_token_id=EOS_ID,
        pad_token_id=tok.pad_token_id,
        temperature=None,
        top_p=None,
        top_k=None,
    )
    for batch in DECODE_BATCHES:
        enc = tok([prompt] * batch, return_tensors="pt", padding=True,
                  add_special_tokens=False)
        plen = enc.input_ids.shape[1]
        # warm-up (short)
        model.generate(**enc, **{**gen_kw, "max_new_tokens": 8, "min_new_tokens": 8})
        mon = OtherLoad()
        secs, sample_text = [], None
        for _ in range(args.decode_repeats):
            t = time.perf_counter()
            out = model.generate(**enc, **gen_kw)
            secs.append(time.perf_counter() - t)
            n_new = out.shape[1] - plen
            assert n_new == DECODE_NEW, f"generated {n_new} tokens, expected {DECODE_NEW}"
            sample_text = tok.decode(out[0, plen:], skip_special_tokens=False)
        tps = [batch * DECODE_NEW / s for s in secs]
        emit({
            "bench": "decode_tokens_per_s",
            "batch": batch,
            "prompt_tokens": plen,
            "new_tokens": DECODE_NEW,
            "threads": torch.get_num_threads(),
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
            "model_load_s": load_s,
            "samples_s": secs,
            "samples_tokens_per_s": tps,
            "median_s": statistics.median(secs),
            "median": batch * DECODE_NEW / statistics.median(secs),
            "unit": "tokens/s",
            "text_preview": sample_text[:120],
            "other_cpu_frac": mon.frac(),
        })


def bench_train(args):
    model, _tok = load_model(resolve_gguf(args.gguf))
    rss_after_load = peak_rss_mb()
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    g = torch.Generator().manual_seed(1234)
    ids = torch.randint(0, model.config.vocab_size, (TRAIN_BATCH, TRAIN_SEQ), generator=g)
    mask = torch.ones_like(ids)

    mon = OtherLoad()
    fwd, bwd, optim, total, losses = [], [], [], [], []
    for step in range(1 + args.train_repeats):
        t0 = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if step == 0:
            continue  # warm-up
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
        optim.append(t3 - t2)
        total.append(t3 - t0)
        losses.append(loss.detach().item())

    def part(xs):
        return {"samples": xs, "median": statistics.median(xs)}

    emit({
        "bench": "train_step",
        "batch": TRAIN_BATCH,
        "seq_len": TRAIN_SEQ,
        "optimizer": "torch.optim.AdamW(lr=1e-5)",
        "threads": torch.get_num_threads(),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "params": n_params,
        "forward_s": part(fwd),
        "backward_s": part(bwd),
        "optimizer_s": part(optim),
        "total_s": part(total),
        "losses": losses,
        "peak_rss_mb_after_load": rss_after_load,
        "peak_rss_mb": peak_rss_mb(),
        "rss_mb_now": current_rss_mb(),
        "other_cpu_frac": mon.frac(),
    })


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def run_children(args):
    results = {}
    for which in ("matmul", "decode", "train"):
        cmd = [sys.executable, os.path.abspath(__file__), "--only", which,
               "--threads", str(args.threads),
               "--matmul-repeats", str(args.matmul_repeats),
               "--decode-repeats", str(args.decode_repeats),
               "--train-repeats", str(args.train_repeats), "--dtype", args.dtype]
        if args.gguf:
            cmd.append(args.gguf)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        for line in proc.stdout.splitlines():
            print(line, flush=True)
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            key = obj.get("bench")
            if key == "decode_tokens_per_s":
                key = f"{key}_b{obj['batch']}"
            if key:
                results[key] = obj
        if proc.returncode != 0:
            sys.exit(f"--only {which} failed with exit status {proc.returncode}")

    tr = results.get("train_step", {})
    from transformers import __version__ as tf_version
    emit({
        "summary": True,
        "torch": torch.__version__,
        "transformers": tf_version,
        "cpu": cpu_name(),
        "threads": args.threads,
        "dtype": str(DTYPE).removeprefix("torch."),
        "matmul_gflops": results.get("matmul_gflops", {}).get("median"),
        "decode_tokens_per_s_b1": results.get("decode_tokens_per_s_b1", {}).get("median"),
        "decode_tokens_per_s_b8": results.get("decode_tokens_per_s_b8", {}).get("median"),
        "train_step_s": tr.get("total_s", {}).get("median"),
        "train_forward_s": tr.get("forward_s", {}).get("median"),
        "train_backward_s": tr.get("backward_s", {}).get("median"),
        "train_optimizer_s": tr.get("optimizer_s", {}).get("median"),
        "train_peak_rss_mb": tr.get("peak_rss_mb"),
        "max_other_cpu_frac": max(
            (r.get("other_cpu_frac") or 0.0 for r in results.values()), default=None
        ),
    })


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("gguf", nargs="?", help=f"path to {GGUF_NAME} "
                    "(default: $RLHF_HOME/models/...; RLHF_HOME=~/.cache/rlhf)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                    help="weights and matmul operands: fp32, or bf16 (what a user runs on a CPU with AMX)")
    ap.add_argument("--only", choices=["matmul", "decode", "train"],
                    help="run one benchmark in this process")
    ap.add_argument("--matmul-repeats", type=int, default=20)
    ap.add_argument("--decode-repeats", type=int, default=3)
    ap.add_argument("--train-repeats", type=int, default=5)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    global DTYPE
    DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    if args.only == "matmul":
        bench_matmul(args)
    elif args.only == "decode":
        bench_decode(args)
    elif args.only == "train":
        bench_train(args)
    else:
        resolve_gguf(args.gguf)  # fail early if the model is missing
        run_children(args)


if __name__ == "__main__":
    main()
