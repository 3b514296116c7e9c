"""How much does teachback add to the model time of a turn? And how fast is `teachback --help`?

    .venv/bin/python benchmarks/turn_overhead.py [--turns 3] [--repeats 3] [--threads 1]

Part 1 runs a bundled scenario through the real stack (student in-process, teacher and judge through
litellm to a managed llama.cpp server), recording every model call: its messages and how many tokens
it produced. Then it generates the same number of tokens for the same prompts with raw llama.cpp
(llama_cpp.Llama in one process: one instance for the student, one shared by teacher and judge, as the
server shares one; end-of-turn tokens banned so each call produces exactly the recorded count).

    overhead = framework wall time of the turns / raw llama.cpp time of the same calls - 1

The framework time includes everything a user waits for: autogen agents, litellm, HTTP to the server,
the judge's grounded checks, events, the transcript (fsynced) and the renderer (plain, to /dev/null).
Part 2 times `teachback --help` (median of 20) against a bare `python -c pass`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def record_calls(client: Any, role: str, log: list[dict[str, Any]]) -> Any:
    """Wrap a client's create_stream so each call's messages and produced tokens are logged."""
    inner = client.create_stream

    async def create_stream(messages: Any, **kwargs: Any) -> Any:
        from autogen_core.models import CreateResult

        t0 = time.perf_counter()
        async for item in inner(messages, **kwargs):
            if isinstance(item, CreateResult):
                log.append(
                    {
                        "role": role,
                        "messages": list(messages),
                        "tokens": item.usage.completion_tokens,
                        "seconds": time.perf_counter() - t0,
                        "json": kwargs.get("json_output") or getattr(client, "json_output", None),
                    }
                )
            yield item

    client.create_stream = create_stream
    return client


def framework_run(turns: int, threads: int, out: Path) -> tuple[float, list[dict[str, Any]], float]:
    """Run the scenario; returns (seconds from the first turn to the end, calls, server start seconds)."""
    from rich.console import Console

    from teachback.agents.cast import make_client
    from teachback.agents.llama_server import ServerPool
    from teachback.agents.models import resolve
    from teachback.scenarios.loader import find_scenario, load_scenario
    from teachback.scenarios.run import RunRequest, run_scenario

    loaded = load_scenario(find_scenario("invented-domain"))
    scenario = loaded.scenario
    calls: list[dict[str, Any]] = []
    with ServerPool(n_threads=threads) as pool:
        started = time.perf_counter()
        clients = {}
        for role in ("student", "teacher", "judge"):
            settings = getattr(scenario, role)
            client = make_client(role, resolve(settings.model), settings, pool=pool, seed=scenario.seed)
            if role == "student":
                client.n_threads = threads
                client.load()
            clients[role] = record_calls(client, role, calls)
        server_start = time.perf_counter() - started
        console = Console(file=open(os.devnull, "w"), width=120)  # noqa: SIM115
        from teachback.agents.litellm_client import import_litellm

        import_litellm()  # a one-off start-up cost (~5 s), not a per-turn one; `teachback run` overlaps it
        run_scenario(
            RunRequest(scenario="invented-domain", turns=turns, out=out, plain=True), console, clients=clients
        )
    return turn_seconds(out / "transcript.jsonl"), calls, server_start


def turn_seconds(transcript: Path) -> float:
    """Wall time from the first turn's start to the run's end, from the transcript's own clock."""
    from teachback.transcripts.events import RunFinished, TurnStarted
    from teachback.transcripts.reader import read_transcript

    events = read_transcript(transcript)
    first = next(e.t for e in events if isinstance(e, TurnStarted))
    last = next(e.t for e in reversed(events) if isinstance(e, RunFinished))
    return last - first


def raw_llama_time(calls: list[dict[str, Any]], threads: int) -> dict[str, float]:
    """Generate the same token counts for the same prompts with llama.cpp directly."""
    import llama_cpp

    from teachback.agents._chat_client_base import to_openai_messages
    from teachback.agents.models import resolve

    path = str(resolve("local/smollm2-135m").local_path)
    student = llama_cpp.Llama(
        path, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False, seed=0
    )
    server_like = llama_cpp.Llama(
        path, n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False, seed=0
    )
    banned = {student.token_eos(): -100.0}
    for text in ("<|im_end|>", "<|endoftext|>"):
        ids = student.tokenize(text.encode(), add_bos=False, special=True)
        if len(ids) == 1:
            banned[ids[0]] = -100.0
    from teachback.agents._chat_client_base import llama_cpp_response_format

    per_role: dict[str, float] = {}
    for call in calls:
        llm = student if call["role"] == "student" else server_like
        extra = {}
        if call["json"]:  # the judge's verdict grammar is model work, not framework work
            extra["response_format"] = llama_cpp_response_format(call["json"])
        t0 = time.perf_counter()
        llm.create_chat_completion(
            to_openai_messages(call["messages"]),
            max_tokens=max(1, call["tokens"]),
            temperature=0.7,
            logit_bias=banned,
            stream=False,
            **extra,
        )
        per_role[call["role"]] = per_role.get(call["role"], 0.0) + time.perf_counter() - t0
    return per_role


def help_timing(repeats: int = 20) -> tuple[float, float]:
    teachback = REPO / ".venv" / "bin" / "teachback"
    cmd = [str(teachback)] if teachback.exists() else [sys.executable, "-m", "teachback.cli"]

    def median_of(argv: list[str]) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run(argv, capture_output=True, check=False)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    return median_of([*cmd, "--help"]), median_of([sys.executable, "-c", "pass"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")

    ratios = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            seconds, calls, server_start = framework_run(args.turns, args.threads, Path(tmp) / "run")
        tokens = sum(c["tokens"] for c in calls)
        raw_by_role = raw_llama_time(calls, args.threads)
        raw = sum(raw_by_role.values())
        ratio = seconds / raw
        for role, raw_s in sorted(raw_by_role.items()):
            in_calls = sum(c["seconds"] for c in calls if c["role"] == role)
            print(f"  {role:8} calls: teachback {in_calls:6.2f} s vs raw {raw_s:6.2f} s")
        print(f"  outside model calls: {seconds - sum(c['seconds'] for c in calls):.2f} s")
        ratios.append(ratio)
        print(
            f"repeat {i + 1}: {args.turns} turns, {len(calls)} model calls, {tokens} tokens | "
            f"teachback {seconds:.2f} s ({tokens / seconds:.1f} tok/s) | raw llama.cpp {raw:.2f} s "
            f"({tokens / raw:.1f} tok/s) | overhead {100 * (ratio - 1):+.1f}% | "
            f"server start {server_start:.2f} s"
        )
    print(f"median overhead per turn: {100 * (statistics.median(ratios) - 1):+.1f}% (target <= +5%)")

    help_s, python_s = help_timing()
    print(
        f"teachback --help: median {1000 * help_s:.0f} ms "
        f"(bare python: {1000 * python_s:.0f} ms; target < 300 ms)"
    )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
