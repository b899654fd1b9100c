"""Checks `rlhf serve` with the official OpenAI Python client (pinned in scripts/setup-openai-tests.sh).

    python client_check.py http://127.0.0.1:PORT/v1 MODEL

Runs every check, prints a JSON summary on stdout ({"ok": ..., "checks": {name: details}}) and
exits non-zero when any check failed. The served model may be a tiny random one: nothing here
looks at the quality of the text, only at the shape and consistency of the answers.
"""

import concurrent.futures
import json
import sys
import time
import traceback

import openai

HI = [{"role": "user", "content": "Say hi"}]


def token_count_matches(entries, usage_tokens, finish_reason):
    """Logprob entries cover the completion tokens; a stop token (EOS) may be counted in usage but
    have no entry of its own."""
    n = len(entries)
    return n == usage_tokens or (finish_reason == "stop" and n == usage_tokens - 1)


def check_chat_basic(client, model):
    r = client.chat.completions.create(model=model, messages=HI, max_tokens=8, temperature=0)
    assert r.object == "chat.completion", f"object {r.object!r}, want 'chat.completion'"
    assert len(r.choices) == 1, f"{len(r.choices)} choices, want 1"
    c = r.choices[0]
    assert c.index == 0, f"choice index {c.index}, want 0"
    assert c.message.role == "assistant", f"message.role {c.message.role!r}, want 'assistant'"
    assert isinstance(c.message.content, str), f"message.content {c.message.content!r} is not a str"
    assert c.finish_reason in ("stop", "length"), f"finish_reason {c.finish_reason!r}, want stop or length"
    u = r.usage
    assert u is not None, "no usage"
    assert u.completion_tokens <= 8, f"usage.completion_tokens {u.completion_tokens} > max_tokens 8"
    if c.finish_reason == "length":
        assert u.completion_tokens > 0, "finish_reason 'length' with 0 completion tokens"
    assert u.prompt_tokens > 0, f"usage.prompt_tokens {u.prompt_tokens}"
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens, (
        f"usage.total_tokens {u.total_tokens} != prompt {u.prompt_tokens} + completion {u.completion_tokens}"
    )
    return {
        "content": c.message.content,
        "finish_reason": c.finish_reason,
        "usage": u.model_dump(exclude_none=True),
    }


def check_greedy_deterministic(client, model):
    a = client.chat.completions.create(model=model, messages=HI, max_tokens=8, temperature=0)
    b = client.chat.completions.create(model=model, messages=HI, max_tokens=8, temperature=0)
    ca, cb = a.choices[0].message.content, b.choices[0].message.content
    assert ca == cb, f"temperature=0 gave {ca!r} then {cb!r}"
    return {"content": ca}


def check_n_choices(client, model):
    r = client.chat.completions.create(model=model, messages=HI, max_tokens=8, temperature=1.0, n=3, seed=1)
    indices = sorted(c.index for c in r.choices)
    assert indices == [0, 1, 2], f"n=3 gave choice indices {indices}, want [0, 1, 2]"
    for c in r.choices:
        assert c.message.role == "assistant" and isinstance(c.message.content, str), f"choice {c.index}: {c}"
        assert c.finish_reason in ("stop", "length"), f"choice {c.index}: finish_reason {c.finish_reason!r}"
    return {"contents": [c.message.content for c in sorted(r.choices, key=lambda c: c.index)]}


def check_stream(client, model):
    kwargs = dict(model=model, messages=HI, max_tokens=8, temperature=0)
    whole = client.chat.completions.create(**kwargs).choices[0]
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    assert chunks, "the stream had no chunks"
    objects = {ch.object for ch in chunks}
    assert objects == {"chat.completion.chunk"}, f"chunk objects {objects}, want only 'chat.completion.chunk'"
    with_choices = [ch for ch in chunks if ch.choices]
    assert with_choices, "no chunk had a choice"
    text = "".join(ch.choices[0].delta.content or "" for ch in with_choices)
    assert text == whole.message.content, (
        f"streamed content {text!r} != non-streamed greedy content {whole.message.content!r}"
    )
    last = with_choices[-1].choices[0]
    assert last.finish_reason is not None, f"the last chunk has no finish_reason: {with_choices[-1]}"
    assert last.finish_reason == whole.finish_reason, (
        f"streamed finish_reason {last.finish_reason!r} != non-streamed {whole.finish_reason!r}"
    )
    early = [ch.choices[0].finish_reason for ch in with_choices[:-1] if ch.choices[0].finish_reason]
    assert not early, f"finish_reason {early} before the last chunk"
    roles = [ch.choices[0].delta.role for ch in with_choices if ch.choices[0].delta.role]
    assert set(roles) <= {"assistant"}, f"delta roles {roles}"
    ids = {ch.id for ch in chunks}
    assert len(ids) == 1, f"chunks carry {len(ids)} different ids: {ids}"
    return {"chunks": len(chunks), "content": text, "finish_reason": last.finish_reason}


def check_chat_logprobs(client, model):
    r = client.chat.completions.create(model=model, messages=HI, max_tokens=8, temperature=0, logprobs=True)
    c = r.choices[0]
    assert c.logprobs is not None, "logprobs=True but choices[0].logprobs is null"
    entries = c.logprobs.content
    assert isinstance(entries, list), f"choices[0].logprobs.content {entries!r} is not a list"
    assert token_count_matches(entries, r.usage.completion_tokens, c.finish_reason), (
        f"{len(entries)} logprob entries for {r.usage.completion_tokens} completion tokens "
        f"(finish_reason {c.finish_reason!r})"
    )
    for i, e in enumerate(entries):
        assert isinstance(e.token, str), f"entry {i}: token {e.token!r} is not a str"
        assert isinstance(e.logprob, (int, float)), f"entry {i}: logprob {e.logprob!r} is not a number"
        assert e.logprob <= 0, f"entry {i}: logprob {e.logprob} > 0"
    # Alternatives: greedy, so the most likely alternative is the token taken, same logprob.
    t = client.chat.completions.create(
        model=model, messages=HI, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3
    )
    tc = t.choices[0]
    assert tc.message.content == c.message.content, "top_logprobs changed the greedy text"
    for i, e in enumerate(tc.logprobs.content):
        alts = e.top_logprobs
        assert len(alts) == 3, f"entry {i}: {len(alts)} top_logprobs, want 3"
        values = [a.logprob for a in alts]
        assert values == sorted(values, reverse=True), f"entry {i}: top_logprobs not most likely first: {values}"
        assert alts[0].token == e.token and abs(alts[0].logprob - e.logprob) < 1e-6, (
            f"entry {i}: greedy took {e.token!r} ({e.logprob}) but the top alternative is "
            f"{alts[0].token!r} ({alts[0].logprob})"
        )
    return {"tokens": len(entries), "logprobs": [e.logprob for e in entries]}


def check_stop(client, model):
    # Greedy: the answer with stop=["\n"] is the unconstrained greedy answer cut before its first newline.
    kwargs = dict(model=model, messages=HI, max_tokens=16, temperature=0)
    free = client.chat.completions.create(**kwargs).choices[0]
    cut = client.chat.completions.create(stop=["\n"], **kwargs).choices[0]
    assert "\n" not in cut.message.content, f'stop=["\\n"] but the content has a newline: {cut.message.content!r}'
    if "\n" in free.message.content:
        want = free.message.content.split("\n")[0]
        assert cut.message.content == want, f'stop=["\\n"] gave {cut.message.content!r}, want {want!r}'
        assert cut.finish_reason == "stop", f'stop=["\\n"] hit, but finish_reason {cut.finish_reason!r}'
    # Sampled, and the stop given as a plain string.
    r = client.chat.completions.create(model=model, messages=HI, max_tokens=24, temperature=1.0, seed=3, stop="\n")
    sampled = r.choices[0].message.content
    assert isinstance(sampled, str) and "\n" not in sampled, f'stop="\\n" but the content has a newline: {sampled!r}'
    return {
        "greedy": free.message.content,
        "greedy_cut": cut.message.content,
        "greedy_finish_reason": cut.finish_reason,
        "sampled": sampled,
    }


def check_seeded_stream(client, model):
    # Seeded sampling repeats, streamed or not; random bytes also exercise the incremental UTF-8
    # decoding of the stream (partial and invalid sequences).
    kwargs = dict(model=model, messages=HI, max_tokens=24, temperature=1.0, seed=7)
    a = client.chat.completions.create(**kwargs).choices[0].message.content
    b = client.chat.completions.create(**kwargs).choices[0].message.content
    assert a == b, f"seed=7 gave {a!r} then {b!r}"
    chunks = client.chat.completions.create(stream=True, **kwargs)
    s = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert s == a, f"seed=7 streamed {s!r}, non-streamed {a!r}"
    return {"content": a}


def check_completions(client, model):
    r = client.completions.create(model=model, prompt="Once upon a time", max_tokens=5, temperature=0)
    assert r.object == "text_completion", f"object {r.object!r}, want 'text_completion'"
    assert len(r.choices) == 1, f"{len(r.choices)} choices, want 1"
    c = r.choices[0]
    assert isinstance(c.text, str), f"choices[0].text {c.text!r} is not a str"
    assert c.finish_reason in ("stop", "length"), f"finish_reason {c.finish_reason!r}"
    assert r.usage is not None and r.usage.completion_tokens <= 5, f"usage {r.usage}"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, f"usage {r.usage}"

    lp = client.completions.create(model=model, prompt="Once upon a time", max_tokens=5, temperature=0, logprobs=1)
    lc = lp.choices[0]
    assert lc.text == c.text, f"logprobs=1 changed the greedy text: {lc.text!r} vs {c.text!r}"
    assert lc.logprobs is not None, "logprobs=1 but choices[0].logprobs is null"
    values = lc.logprobs.token_logprobs
    assert isinstance(values, list), f"choices[0].logprobs.token_logprobs {values!r} is not a list"
    assert token_count_matches(values, lp.usage.completion_tokens, lc.finish_reason), (
        f"{len(values)} token_logprobs for {lp.usage.completion_tokens} completion tokens"
    )
    assert all(isinstance(v, (int, float)) and v <= 0 for v in values), f"token_logprobs {values}"
    top = client.completions.create(model=model, prompt="Once upon a time", max_tokens=5, temperature=0, logprobs=2)
    alts = top.choices[0].logprobs.top_logprobs
    assert len(alts) == len(values), f"{len(alts)} top_logprobs entries for {len(values)} tokens"
    for i, (a, v) in enumerate(zip(alts, values)):
        # Keyed by text: byte tokens that decode alike ("\ufffd") share a key, the likelier kept.
        assert isinstance(a, dict) and 1 <= len(a) <= 2, f"entry {i}: top_logprobs {a!r}, want a dict of 2"
        assert abs(max(a.values()) - v) < 1e-6, f"entry {i}: greedy token logprob {v} is not the top of {a}"
    return {"text": c.text, "token_logprobs": values}


def check_models(client, model):
    ids = [m.id for m in client.models.list()]
    assert model in ids, f"models.list() gave {ids}, without {model!r}"
    return {"ids": ids}


def expect_bad_request(label, call):
    try:
        r = call()
    except openai.BadRequestError as e:
        assert e.status_code == 400, f"{label}: status {e.status_code}"
        message = e.body.get("message") if isinstance(e.body, dict) else None
        assert isinstance(message, str) and message.strip(), f"{label}: no error message in {e.body!r}"
        return message
    raise AssertionError(f"{label} was accepted, want HTTP 400: {r}")


def check_errors(client, model):
    chat, comp = client.chat.completions.create, client.completions.create
    return {
        "max_tokens=-1": expect_bad_request("max_tokens=-1", lambda: chat(model=model, messages=HI, max_tokens=-1)),
        "messages=[]": expect_bad_request("messages=[]", lambda: chat(model=model, messages=[], max_tokens=4)),
        "completions logprobs=6": expect_bad_request(
            "completions logprobs=6", lambda: comp(model=model, prompt="Hi", max_tokens=2, logprobs=6)
        ),
        "top_logprobs=21": expect_bad_request(
            "top_logprobs=21",
            lambda: chat(model=model, messages=HI, max_tokens=2, logprobs=True, top_logprobs=21),
        ),
    }


def check_concurrency(client, model):
    def one(i):
        r = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"Count to {i}"}], max_tokens=16, temperature=1.0
        )
        c = r.choices[0]
        assert isinstance(c.message.content, str) and c.finish_reason in ("stop", "length"), f"request {i}: {r}"
        return r.usage.completion_tokens

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        tokens = list(pool.map(one, range(32)))
    wall = time.monotonic() - start
    assert len(tokens) == 32, f"{len(tokens)} of 32 requests completed"
    return {"requests": 32, "completion_tokens": sum(tokens), "wall_seconds": round(wall, 3)}


CHECKS = [
    ("chat_basic", check_chat_basic),
    ("greedy_deterministic", check_greedy_deterministic),
    ("n_choices", check_n_choices),
    ("stream", check_stream),
    ("chat_logprobs", check_chat_logprobs),
    ("stop", check_stop),
    ("seeded_stream", check_seeded_stream),
    ("completions", check_completions),
    ("models", check_models),
    ("errors", check_errors),
    ("concurrency", check_concurrency),
]


def main():
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} BASE_URL MODEL")
    base_url, model = sys.argv[1], sys.argv[2]
    # No retries: a failing request must show up as a failure, not as a slow success.
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)
    summary = {"openai": openai.__version__, "base_url": base_url, "model": model, "checks": {}}
    failed = []
    for name, check in CHECKS:
        start = time.monotonic()
        try:
            details = {"ok": True, **check(client, model)}
        except Exception as e:  # noqa: BLE001 - every failure is reported, the rest still run
            failed.append(name)
            kind = "" if isinstance(e, AssertionError) else f"{type(e).__name__}: "
            details = {"ok": False, "error": f"{kind}{e}", "traceback": traceback.format_exc()}
        details["seconds"] = round(time.monotonic() - start, 3)
        summary["checks"][name] = details
    summary["ok"] = not failed
    summary["failed"] = failed
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
