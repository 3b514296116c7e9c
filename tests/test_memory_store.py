"""MemoryStore: provenance, content ids, deduplication, search, list, delete, export, errors.

Every test in `TestStore` runs against a folder (PersistentClient) and, marked real, against a real
`chroma run` server on loopback (HttpClient), so both modes pass the same checks.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from teachback.errors import MemoryStoreError
from teachback.memory.store import RECORD_FIELDS, MemoryStore, TurnRecord, collection_name, turn_id

CAPITAL = {"question": "What is the capital of Vellmar?", "answer": "Korrin is the capital of Vellmar."}
CAPITAL_AGAIN = {
    "question": "Which city is the capital of Vellmar?",
    "answer": "Korrin is the capital of Vellmar.",
}
CURRENCY = {
    "question": "What money does Vellmar use?",
    "answer": "The drell, divided into one hundred pennets.",
}
RIVER = {"question": "What is the longest river?", "answer": "The Ossary, 212 kilometres long."}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `chroma run` on loopback, for the whole module; stopped at the end."""
    chroma = Path(sys.executable).with_name("chroma")
    if not chroma.exists():
        pytest.skip("the chroma CLI is not installed next to this python")
    folder = tmp_path_factory.mktemp("chroma-server")
    port = _free_port()
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen(
        [str(chroma), "run", "--path", str(folder / "data"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chroma run did not come up: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(params=["dir", pytest.param("server", marks=pytest.mark.real)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> MemoryStore:
    if request.param == "dir":
        return MemoryStore.open(tmp_path / "memory")
    return MemoryStore.open(url=request.getfixturevalue("chroma_server"))


@pytest.fixture
def ns() -> str:
    """A namespace of its own for each test (the server is shared by the module)."""
    return f"vellmar-{uuid.uuid4().hex[:8]}"


class TestStore:
    def test_add_stores_the_turn_with_its_provenance(self, store: MemoryStore, ns: str) -> None:
        result = store.add_turn(
            ns,
            **CAPITAL,
            scenario="vellmar",
            run_id="r1",
            turn=3,
            objective="the capital",
            teacher_model="local/smollm2-135m",
            student_model="local/smollm2-135m",
            judge_score=0.9,
            judge_reason="names Korrin",
            teachback="Korrin is the capital.",
            teachback_score=0.8,
        )
        assert result.id == turn_id(ns, CAPITAL["question"], CAPITAL["answer"])
        assert (result.duplicate_of, result.similarity, result.existed) == (None, 0.0, False)
        [turn] = store.entries(ns)
        assert set(turn.metadata) == set(RECORD_FIELDS)
        assert turn.question == CAPITAL["question"] and turn.answer == CAPITAL["answer"]
        m = turn.metadata
        assert (m["scenario"], m["run_id"], m["turn"], m["objective"]) == ("vellmar", "r1", 3, "the capital")
        assert (m["judge_score"], m["judge_reason"], m["teachback_score"]) == (0.9, "names Korrin", 0.8)
        assert m["teacher_model"] == m["student_model"] == "local/smollm2-135m"
        assert m["created_at"].endswith("Z") and m["teachback_version"] and len(m["content_sha256"]) == 64

    def test_the_same_turn_again_upserts(self, store: MemoryStore, ns: str) -> None:
        first = store.add_turn(ns, **CAPITAL, run_id="r1", turn=1)
        again = store.add_turn(
            ns, question="  what is the CAPITAL of Vellmar? ", answer=CAPITAL["answer"], run_id="r2"
        )
        assert again.id == first.id and again.existed and again.duplicate_of is None
        [turn] = store.entries(ns)
        assert turn.run_id == "r2"  # the latest provenance wins; created_at is kept
        [stats] = [s for s in store.stats().namespaces if s.namespace == ns]
        assert (stats.turns, stats.duplicates) == (1, 0)

    def test_a_near_duplicate_is_recorded_as_one(self, store: MemoryStore, ns: str) -> None:
        first = store.add_turn(ns, **CAPITAL, run_id="r1", turn=1, judge_score=0.9)
        dup = store.add_turn(ns, **CAPITAL_AGAIN, run_id="r2", turn=1, judge_score=0.9)
        other = store.add_turn(ns, **CURRENCY, run_id="r2", turn=2, judge_score=0.9)
        assert dup.duplicate_of == first.id and dup.similarity >= 0.95 and not dup.existed
        assert other.duplicate_of is None and other.similarity < 0.95
        assert [h.id for h in store.search(ns, "Which city is the capital?", k=5)] == [first.id, other.id]
        with_dups = store.search(ns, "Which city is the capital?", k=5, include_duplicates=True)
        assert {h.id for h in with_dups} == {first.id, dup.id, other.id}
        [stats] = [s for s in store.stats().namespaces if s.namespace == ns]
        assert (stats.turns, stats.duplicates, stats.runs, stats.embedder) == (2, 1, 2, "minilm")

    def test_a_turn_nearly_repeating_a_duplicate_points_at_the_original(
        self, store: MemoryStore, ns: str
    ) -> None:
        first = store.add_turn(ns, **CAPITAL)
        store.add_turn(ns, **CAPITAL_AGAIN)
        third = store.add_turn(ns, question="Which city is Vellmar's capital?", answer=CAPITAL["answer"])
        assert third.duplicate_of == first.id

    def test_near_duplicates_within_one_batch(self, store: MemoryStore, ns: str) -> None:
        records = [
            TurnRecord(**CAPITAL),
            TurnRecord(**CURRENCY),
            TurnRecord(**CAPITAL_AGAIN),
            TurnRecord(**CAPITAL),
        ]
        a, b, c, d = store.add_turns(ns, records)
        assert a.duplicate_of is None and b.duplicate_of is None
        assert c.duplicate_of == a.id
        assert d.id == a.id and d.existed
        assert len(store.entries(ns)) == 3

    def test_search_ranks_by_meaning(self, store: MemoryStore, ns: str) -> None:
        store.add_turns(ns, [TurnRecord(**CAPITAL), TurnRecord(**CURRENCY), TurnRecord(**RIVER)])
        hits = store.search(ns, "How long is the Ossary?", k=2)
        assert len(hits) == 2 and hits[0].question == RIVER["question"] and hits[0].namespace == ns
        assert hits[0].similarity > hits[1].similarity
        assert len(store.search(ns, "anything", k=10)) == 3

    def test_list_filters_by_run_and_delete_run_removes_it(self, store: MemoryStore, ns: str) -> None:
        store.add_turn(ns, **CAPITAL, run_id="r1", turn=1)
        store.add_turn(ns, **CURRENCY, run_id="r2", turn=1)
        store.add_turn(ns, **RIVER, run_id="r2", turn=2)
        assert [t.turn for t in store.entries(ns, run="r2")] == [1, 2]
        assert store.delete_run(ns, "r2", from_turn=2) == 1
        assert store.delete_run(ns, "r2") == 1
        assert store.delete_run(ns, "r2") == 0
        assert [t.run_id for t in store.entries(ns)] == ["r1"]

    def test_deleting_the_original_promotes_its_oldest_duplicate(self, store: MemoryStore, ns: str) -> None:
        store.add_turn(ns, **CAPITAL, run_id="r1")
        dup = store.add_turn(ns, **CAPITAL_AGAIN, run_id="r2")
        third = store.add_turn(
            ns, question="Which city is Vellmar's capital?", answer=CAPITAL["answer"], run_id="r3"
        )
        assert store.delete_run(ns, "r1") == 1
        by_id = {t.id: t for t in store.entries(ns)}
        assert by_id[dup.id].duplicate_of is None
        assert by_id[third.id].duplicate_of == dup.id

    def test_namespaces_are_separate(self, store: MemoryStore, ns: str) -> None:
        other = ns + " / student B"
        store.add_turn(ns, **CAPITAL)
        store.add_turn(other, **CAPITAL)
        assert {ns, other} <= set(store.namespaces())
        assert len(store.entries(other)) == 1 and store.entries(other)[0].namespace == other
        assert len({h.id for h in store.search(None, "capital", k=10) if h.namespace in (ns, other)}) == 2

    def test_export_leaves_out_duplicates_and_low_scores(
        self, store: MemoryStore, ns: str, tmp_path: Path
    ) -> None:
        store.add_turn(ns, **CAPITAL, judge_score=0.9)
        store.add_turn(ns, **CAPITAL_AGAIN, judge_score=0.9)
        store.add_turn(ns, **CURRENCY, judge_score=0.4)
        out = tmp_path / "train.jsonl"
        result = store.export(ns, "chatml", out, min_score=0.5)
        assert (result.written, result.skipped_duplicates, result.skipped_low_score) == (1, 1, 1)
        [line] = out.read_text(encoding="utf-8").splitlines()
        assert json.loads(line) == {
            "messages": [
                {"role": "user", "content": CAPITAL["question"]},
                {"role": "assistant", "content": CAPITAL["answer"]},
            ]
        }
        result = store.export(ns, "sharegpt", out, include_duplicates=True)
        rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
        assert result.written == 3 and all(r["conversations"][0]["from"] == "human" for r in rows)

    def test_unknown_namespace_is_a_clear_error(self, store: MemoryStore, ns: str) -> None:
        with pytest.raises(MemoryStoreError, match="has no namespace .*memory stats"):
            store.search(ns + "-missing", "capital")
        with pytest.raises(MemoryStoreError, match="has no namespace"):
            store.delete_run(ns + "-missing", "r1")


# ---- folder-only behaviour -----------------------------------------------------------------------------


def test_a_reopened_store_rebuilds_the_embedder_from_the_collection(tmp_path: Path) -> None:
    store = MemoryStore.open(tmp_path / "memory")
    store.add_turn("vellmar", **CAPITAL, run_id="r1")
    store.add_turn("vellmar", **CURRENCY, run_id="r1")
    # A fresh process knows nothing but the folder: chromadb rebuilds the registered embedder from config.
    script = (
        "import sys; from pathlib import Path; from teachback.memory.store import MemoryStore\n"
        "s = MemoryStore.open(Path(sys.argv[1]), create=False)\n"
        "print(s.search('vellmar', 'Which coins do they use?', k=1)[0].question)\n"
        "print(s.stats().namespaces[0].embedder)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "memory")], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [CURRENCY["question"], "minilm"]


def test_duplicate_threshold_is_configurable(tmp_path: Path) -> None:
    store = MemoryStore.open(tmp_path / "memory", duplicate_threshold=0.999)
    store.add_turn("vellmar", **CAPITAL)
    assert store.add_turn("vellmar", **CAPITAL_AGAIN).duplicate_of is None
    with pytest.raises(MemoryStoreError, match="threshold"):
        MemoryStore.open(tmp_path / "memory", duplicate_threshold=1.5)


def test_the_default_folder_is_under_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = MemoryStore.open()
    assert Path(store.location) == tmp_path / ".teachback" / "memory"
    assert (tmp_path / ".teachback" / "memory").is_dir()


def test_collection_names_follow_chromadb_rules() -> None:
    import re

    for namespace in ["vellmar", "Vellmar / student A", "ab", "1.2.3.4", "..x..", "a" * 100, "---", "é"]:
        name = collection_name(namespace)
        assert 3 <= len(name) <= 63 and ".." not in name, name
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9]", name), name
    assert collection_name("a/b") != collection_name("a-b")
    with pytest.raises(MemoryStoreError, match="empty"):
        collection_name(" ")


def test_turn_record_from_events() -> None:
    from teachback.transcripts.events import RunStarted, TurnAccepted

    header = RunStarted(
        t=0.0,
        run_id="r7",
        scenario="vellmar",
        scenario_path="s.yaml",
        scenario_sha256="0" * 64,
        models={"teacher": "T", "student": "S", "judge": "J"},
        options={},
        seed=1,
        versions={},
        started_at="2025-01-01T00:00:00Z",
    )
    accepted = TurnAccepted(
        t=1.0, turn=2, objective="o", question="q?", answer="a.", score=0.8, teacher_model="T", teachback="tb"
    )
    record = TurnRecord.from_event(accepted, header, judge_reason="fine")
    assert (record.run_id, record.scenario, record.student_model, record.turn) == ("r7", "vellmar", "S", 2)
    assert (record.judge_score, record.judge_reason, record.teachback) == (0.8, "fine", "tb")


# ---- errors: one line, naming the place and what to do ---------------------------------------------------


def test_a_folder_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "memory").write_text("not a folder")
    with pytest.raises(MemoryStoreError, match="is a file"):
        MemoryStore.open(tmp_path / "memory")


def test_create_false_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(MemoryStoreError, match="no memory at .*run a scenario first"):
        MemoryStore.open(tmp_path / "nothing", create=False)
    assert not (tmp_path / "nothing").exists()


def test_a_corrupt_store_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "memory"
    folder.mkdir()
    (folder / "chroma.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(MemoryStoreError) as info:
        store = MemoryStore.open(folder)
        store.add_turn("vellmar", **CAPITAL)
    message = str(info.value)
    assert "\n" not in message and str(folder) in message


def test_an_unreachable_server(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    with pytest.raises(MemoryStoreError, match=f"cannot reach the chroma server at {url}.*chroma run"):
        MemoryStore.open(url=url)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("url", ["ftp://host:1", "http://", "http://host:notaport"])
def test_a_malformed_url(url: str) -> None:
    with pytest.raises(MemoryStoreError, match="memory url"):
        MemoryStore.open(url=url)


def test_folder_and_url_together(tmp_path: Path) -> None:
    with pytest.raises(MemoryStoreError, match="not both"):
        MemoryStore.open(tmp_path, url="http://127.0.0.1:8000")


def test_unknown_embedder(tmp_path: Path) -> None:
    with pytest.raises(MemoryStoreError, match="unknown embedder 'bert'"):
        MemoryStore.open(tmp_path / "memory", embedder="bert")
