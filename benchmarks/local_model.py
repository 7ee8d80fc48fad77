"""The local model's runtimes, side by side: llama.cpp's own server (the prebuilt
xllamacpp wheel) against llama-cpp-python's server (built from source).

    python benchmarks/local_model.py          # a readable table per runtime
    python benchmarks/local_model.py --json   # one JSON object
    python benchmarks/local_model.py --quick  # the 135M model, short prompts: what CI runs

For each runtime that is installed, with the same model, threads and window:
- ``start_s``: from start to answering;
- ``prompt_tok_s``: tokens read a second (a prompt of about 2,000 tokens, one out);
- ``gen_tok_s``: tokens written a second;
- ``parallel4_speedup``: four different requests at once against one after another;
- ``reuse_evaluated_share``: of the prompt tokens of a growing six-step conversation (the
  RLM loop's shape: each step resends the history), the share the server had to read;
  the rest came from its prompt cache (llama-cpp-python reports none, so its share reads
  1.0: compare the times). ``reuse_step_s``: the mean time of steps 2-6;
  ``reuse_with_subcalls_step_s``: the same with a sub-call of other text before each step;
- ``batch16_s``: 16 sub-calls on short passages sent at once, as ``llm_query_batched``
  sends them (the engine's sub-call prompt, about 200 tokens each, a short answer);
- ``grammar_gen_tok_s``: tokens written a second under a JSON-schema constraint.
Every figure comes from the wall clock and the token counts the server reports.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from report import emit

from shesha.config import load_settings, models_dir
from shesha.local.registry import ModelRegistry
from shesha.local.server import RUNTIMES, LocalModelServer, default_threads
from shesha.rlm.prompting import PromptSet

TARGETS = {"gen_tok_s": (">=", 5.0), "reuse_evaluated_share": ("<=", 0.5)}
WORDS = ("harbour", "ledger", "signal", "orchard", "quarry", "lantern", "meadow", "copper")


def prose(tokens: int, seed: int) -> str:
    """About ``tokens`` tokens of distinct sentences (no two prompts share a prefix)."""
    lines = []
    for i in range((tokens // 12) + 1):
        a, b = WORDS[(i + seed) % len(WORDS)], WORDS[(i * 3 + seed) % len(WORDS)]
        lines.append(f"Entry {seed}-{i}: the {a} log notes {i * 7 + seed} crates near the {b}.")
    return "\n".join(lines)


def ask(base: str, alias: str, messages: list[dict[str, str]], **extra: Any) -> dict[str, Any]:
    body = {"model": alias, "messages": messages, "temperature": 0, **extra}
    request = urllib.request.Request(
        f"{base}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=900) as r:  # loopback only
        reply: dict[str, Any] = json.load(r)
    reply["_wall"] = time.perf_counter() - started
    return reply


def usage(reply: dict[str, Any]) -> tuple[int, int, int]:
    u = reply.get("usage") or {}
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    timings = reply.get("timings") or {}
    if "cache_n" in timings:
        cached = int(timings["cache_n"])
    return int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0)), int(cached)


def measure(server: LocalModelServer, quick: bool) -> dict[str, Any]:
    started = time.perf_counter()
    base = server.ensure()
    start_s = time.perf_counter() - started
    alias = server.alias
    scale = 4 if quick else 1
    ask(base, alias, [{"role": "user", "content": "Say hi."}], max_tokens=4)  # warm up

    long = ask(base, alias, [{"role": "user", "content": prose(2000 // scale, 1)}], max_tokens=1)
    prompt_tokens, _, _ = usage(long)
    count = [{"role": "user", "content": "Write the numbers from 1 to 300, comma separated."}]
    gen = ask(base, alias, count, max_tokens=160 // scale)
    short = ask(base, alias, count, max_tokens=1)  # the same prompt: its read time
    _, written, _ = usage(gen)
    gen_tok_s = (written - 1) / max(gen["_wall"] - short["_wall"], 1e-6)

    def one(seed: int) -> float:
        messages = [{"role": "user", "content": prose(300 // scale, 100 + seed) + "\nSum up."}]
        return float(ask(base, alias, messages, max_tokens=48 // scale)["_wall"])

    serial = sum(one(i) for i in range(4))
    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(10, 14)))
    parallel = time.perf_counter() - t0

    subcall = PromptSet.load(style="compact").render("subcall_system")

    def passage(seed: int) -> float:
        asked = "Which crates does this passage count? Answer in a few words."
        messages = [
            {"role": "system", "content": subcall},
            {"role": "user", "content": f"{asked}\n\n{prose(150 // scale, 300 + seed)}"},
        ]
        return float(ask(base, alias, messages, max_tokens=24 // scale)["_wall"])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(passage, range(16)))
    batch16 = time.perf_counter() - t0

    reuse = conversation(base, alias, scale, subcalls=False)
    mixed = conversation(base, alias, scale, subcalls=True)

    schema = {
        "type": "object",
        "properties": {"names": {"type": "array", "items": {"type": "string"}}},
        "required": ["names"],
    }
    asked = [{"role": "user", "content": "List five names of rivers as JSON."}]
    free = ask(base, alias, asked, max_tokens=120)
    fmt = {"type": "json_object", "schema": schema}
    bound = ask(base, alias, asked, max_tokens=120, response_format=fmt)
    short_g = ask(base, alias, asked, max_tokens=1, response_format=fmt)
    return {
        "runtime": server.runtime.name,
        "slots": server.slots,
        "threads": server.threads,
        "start_s": round(start_s, 2),
        "prompt_tok_s": round(prompt_tokens / long["_wall"], 1),
        "gen_tok_s": round(gen_tok_s, 1),
        "parallel4_speedup": round(serial / parallel, 2),
        "batch16_s": round(batch16, 1),
        "reuse_evaluated_share": reuse[0],
        "reuse_step_s": reuse[1],
        "reuse_with_subcalls_step_s": mixed[1],
        "free_gen_tok_s": round(usage(free)[1] / free["_wall"], 1),
        "grammar_gen_tok_s": round(
            (usage(bound)[1] - 1) / max(bound["_wall"] - short_g["_wall"], 1e-6), 1
        ),
        "grammar_json_valid": _valid(bound),
    }


def conversation(base: str, alias: str, scale: int, *, subcalls: bool) -> tuple[float, float]:
    """Six root steps of a growing history, with a sub-call of other text before each when
    ``subcalls``: the share of the prompt tokens the server read, and the mean time of
    steps 2-6."""
    system = {"role": "system", "content": "You write Python. " + prose(1500 // scale, 7)}
    messages: list[dict[str, str]] = [system]
    evaluated = total = 0
    steps: list[float] = []
    for step in range(6):
        if subcalls:
            other = [{"role": "user", "content": prose(300 // scale, 900 + step) + "\nSum up."}]
            ask(base, alias, other, max_tokens=24 // scale)
        messages.append({"role": "user", "content": prose(200 // scale, 50 + step)})
        reply = ask(base, alias, messages, max_tokens=40 // scale)
        read, _, cached = usage(reply)
        if step:
            evaluated += read - cached
            total += read
            steps.append(reply["_wall"])
        messages.append(
            {"role": "assistant", "content": reply["choices"][0]["message"]["content"] or ""}
        )
    return round(evaluated / max(total, 1), 3), round(statistics.mean(steps), 2)


def _valid(reply: dict[str, Any]) -> bool:
    try:
        return isinstance(json.loads(reply["choices"][0]["message"]["content"])["names"], list)
    except (ValueError, KeyError, TypeError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="the 135M model, short prompts")
    parser.add_argument("--runtime", choices=sorted(RUNTIMES), action="append")
    parser.add_argument("--model", default=None, help="a local model name (default: by mode)")
    parser.add_argument("--threads", type=int, default=default_threads())
    args = parser.parse_args()
    model = args.model or ("smollm2-135m" if args.quick else "qwen2.5-coder-1.5b")
    registry = ModelRegistry(models_dir(load_settings()))
    entry = registry.resolve(f"local/{model}")
    names = args.runtime or [n for n, r in RUNTIMES.items() if r.installed()]
    if not names:
        sys.exit("No local model server is installed: run `make local-model`.")
    runtimes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as logs:
        for name in names:
            server = LocalModelServer(
                entry, log_dir=Path(logs), n_ctx=8192, threads=args.threads, runtime=RUNTIMES[name]
            )
            try:
                runtimes[name] = measure(server, args.quick)
            finally:
                server.stop()
    if args.json:
        print(json.dumps({"model": model, "runtimes": runtimes}))
        return
    for name, figures in runtimes.items():
        print(f"\n{name} ({model})")
        emit(figures, TARGETS, as_json=False)


if __name__ == "__main__":
    main()
