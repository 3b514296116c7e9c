"""Benchmark the memory: embedding throughput, insert throughput, query latency at N records, peak RSS.

    .venv/bin/python benchmarks/memory_bench.py                 # 10,000 turns, 200 queries
    .venv/bin/python benchmarks/memory_bench.py --n 1000 --json

Synthetic turns are built from the bundled knowledge files' vocabulary (deterministic, seeded), with
question and answer lengths like real turns (~12 and ~30 words), so they embed like text and are rarely
near-duplicates. Inserts go through `MemoryStore.add_turns` (embedding, deduplication query and upsert,
batched); queries through `MemoryStore.search` (embedding the query + chromadb + dropping duplicates), and
separately the chromadb query alone with a precomputed vector. The store lives in a temporary folder
unless --dir is given. Check `uptime` first: on a shared 2-core machine other work halves these figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KNOWLEDGE = REPO / "scenarios" / "knowledge"


def vocabulary() -> list[str]:
    words: set[str] = set()
    for path in KNOWLEDGE.glob("*.md"):
        words.update(w.lower() for w in re.findall(r"[A-Za-z][A-Za-z-]+", path.read_text(encoding="utf-8")))
    extra = (
        "river mountain harbour market winter summer engine bridge garden tower library island valley forest "
        "copper silver timber grain wool salt glass bread music painting poem school council ship lantern "
        "north south east west early late small large old new quiet loud bright dark heavy light"
    )
    words.update(extra.split())
    return sorted(words)


def synthetic_turns(n: int, seed: int = 7) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    vocab = vocabulary()
    starts = ["What is", "Why does", "How do", "When was", "Where is", "Which", "Who made", "How many"]
    turns = []
    for i in range(n):
        q = f"{rng.choice(starts)} {' '.join(rng.choices(vocab, k=rng.randint(6, 14)))}?"
        a = " ".join(rng.choices(vocab, k=rng.randint(18, 42))).capitalize() + f", number {i}."
        turns.append((q, a))
    return turns


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="turns to insert (default 10000)")
    parser.add_argument("--queries", type=int, default=200, help="queries to time (default 200)")
    parser.add_argument("--k", type=int, default=5, help="results per query (default 5)")
    parser.add_argument("--batch", type=int, default=256, help="turns per add_turns call (default 256)")
    parser.add_argument("--embed-texts", type=int, default=2000, help="texts for the embedding figure")
    parser.add_argument("--dir", type=Path, help="memory folder (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)

    from teachback.memory.embeddings import make_embedder
    from teachback.memory.store import MemoryStore, TurnRecord

    figures: dict[str, object] = {"n": args.n, "load_before": os.getloadavg(), "cpus": os.cpu_count()}
    turns = synthetic_turns(args.n)
    rng = random.Random(11)

    # 1. embedding throughput: the questions and answers as insert embeds them, batched
    embedder = make_embedder("minilm")
    embedder.embed(["warm up"])
    texts = [t for pair in turns[: max(1, args.embed_texts // 2)] for t in pair]
    started = time.perf_counter()
    embedder.embed(texts)
    figures["embed_texts_per_s"] = round(len(texts) / (time.perf_counter() - started), 1)

    with tempfile.TemporaryDirectory(prefix="teachback-bench-") as tmp:
        store = MemoryStore.open(args.dir or Path(tmp) / "memory")
        namespace = f"bench-{args.n}"
        store.clear(namespace)

        # 2. insert throughput: add_turns in batches (embed, dedup query, upsert)
        duplicates = 0
        started = time.perf_counter()
        for start in range(0, args.n, args.batch):
            chunk = turns[start : start + args.batch]
            records = [TurnRecord(q, a, run_id="bench", turn=start + i) for i, (q, a) in enumerate(chunk)]
            duplicates += sum(r.duplicate_of is not None for r in store.add_turns(namespace, records))
        elapsed = time.perf_counter() - started
        figures["insert_turns_per_s"] = round(args.n / elapsed, 1)
        figures["insert_seconds"] = round(elapsed, 1)
        figures["duplicates_found"] = duplicates

        # 3. query latency at n records: reworded questions of stored turns, end to end
        queries = []
        for q, _ in rng.sample(turns, min(args.queries, len(turns))):
            words = q.rstrip("?").split()
            rng.shuffle(words)
            queries.append(" ".join(words[: max(3, len(words) - 2)]) + "?")
        store.search(namespace, "warm up", k=args.k)
        latencies = []
        for query in queries:
            started = time.perf_counter()
            store.search(namespace, query, k=args.k)
            latencies.append((time.perf_counter() - started) * 1000)
        figures["search_ms_p50"] = round(statistics.median(latencies), 2)
        figures["search_ms_p95"] = round(percentile(latencies, 95), 2)

        # ... and the chromadb query alone, with the query vectors computed beforehand
        collection, _ = store._collection(namespace)  # the benchmark may look inside
        vectors = embedder.embed(queries)
        raw = []
        for vector in vectors:
            started = time.perf_counter()
            collection.query(query_embeddings=[vector], n_results=args.k, include=["metadatas", "distances"])
            raw.append((time.perf_counter() - started) * 1000)
        figures["chroma_query_ms_p50"] = round(statistics.median(raw), 2)
        figures["chroma_query_ms_p95"] = round(percentile(raw, 95), 2)
        figures["records"] = collection.count()

    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    figures["load_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>22}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
