"""The vector memory of accepted turns: one chromadb collection per namespace, with provenance.

    store = MemoryStore.open()                        # .teachback/memory under the current directory
    store = MemoryStore.open(url="http://host:8000")  # a shared `chroma run` server
    r = store.add_turn("vellmar", question="What is the capital?", answer="Korrin.", run_id="r1", turn=1)
    r.duplicate_of                                    # None, or the stored turn this one nearly repeats
    store.search("vellmar", "Which city is the capital?", k=3)   # [Hit(similarity=0.83, ...), ...]
    store.export("vellmar", "chatml", Path("train.jsonl"))

A namespace is a scenario, or one student in a classroom; its collection name is the namespace made safe
for chromadb (`collection_name`). One record per accepted turn (record schema 1):

    id        "t" + sha256(namespace, normalised question, normalised answer)[:32]: the same turn written
              again (a resumed or re-run scenario) upserts instead of duplicating
    document  question + blank line + answer (what `list` and the CLI show)
    vector    normalise(embed(question) + embed(answer)): question and answer weigh the same whatever
              their lengths; on tests/data/paraphrases.yaml this ranks the right turn first for 28 of 30
              paraphrased questions, against 25 of 30 for the embedding of the whole document
    metadata  RECORD_FIELDS: the question and answer themselves, the provenance (scenario, run, turn,
              objective, models, judge score and reason, teach-back), created_at/updated_at (UTC),
              teachback_version, content_sha256, and duplicate_of / nearest_similarity (to the
              closest turn stored before it)

Deduplication: a new turn whose embedding has cosine similarity >= `duplicate_threshold` (default 0.95)
with a stored turn is stored with `duplicate_of` = that turn's id (always a canonical turn, never another
duplicate). Duplicates are left out of search and training export unless asked for. Deleting a run promotes
the oldest duplicate of each deleted turn to canonical, so no example is lost with it.

Every chromadb failure becomes one MemoryStoreError line that names the folder or server and what to do.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from teachback import __version__
from teachback.errors import MemoryStoreError, first_line

if TYPE_CHECKING:
    import numpy as np
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

    from teachback.transcripts.events import RunStarted, TurnAccepted

DEFAULT_DIR = Path(".teachback") / "memory"
MEMORY_TOKEN_ENV = "TEACHBACK_MEMORY_TOKEN"  # a memory server's token: from the environment only, never argv
DEFAULT_DUPLICATE_THRESHOLD = 0.95
RECORD_VERSION = 1
COLLECTION_MARK = "teachback_namespace"  # collection metadata: the namespace as the user wrote it
RECORD_FIELDS = (
    "record_version",
    "question",
    "answer",
    "scenario",
    "run_id",
    "turn",
    "objective",
    "teacher_model",
    "student_model",
    "judge_score",
    "judge_reason",
    "teachback",
    "teachback_score",
    "teachback_accepted",
    "facts",
    "created_at",
    "updated_at",
    "teachback_version",
    "content_sha256",
    "duplicate_of",
    "nearest_similarity",
)
_CHUNK = 256  # turns embedded, deduplicated and upserted together
_PAGE = 2000  # records read per request when listing


@dataclass(frozen=True)
class TurnRecord:
    """One accepted turn and where it came from: what `add_turn` stores."""

    question: str
    answer: str
    scenario: str = ""
    run_id: str = ""
    turn: int = 0
    objective: str = ""
    teacher_model: str = ""
    student_model: str = ""
    judge_score: float = 0.0
    judge_reason: str = ""
    teachback: str = ""
    teachback_score: float = 0.0
    teachback_accepted: bool = False  # the restatement passed the gate: a training example of its own
    facts: tuple[int, ...] = ()  # the curriculum facts the turn stated (indices into its run's facts)

    @classmethod
    def from_event(cls, accepted: TurnAccepted, header: RunStarted, judge_reason: str = "") -> TurnRecord:
        """The record for a `TurnAccepted` event of the run whose header is `header`."""
        return cls(
            question=accepted.question,
            answer=accepted.answer,
            scenario=header.scenario,
            run_id=header.run_id,
            turn=accepted.turn,
            objective=accepted.objective,
            teacher_model=accepted.teacher_model,
            student_model=header.models.get("student", ""),
            judge_score=float(accepted.score),
            judge_reason=judge_reason,
            teachback=accepted.teachback,
            teachback_score=float(accepted.teachback_score),
            teachback_accepted=bool(accepted.teachback_accepted),
            facts=tuple(int(f) for f in accepted.facts if isinstance(f, int)),
        )


@dataclass(frozen=True)
class AddResult:
    """What happened to one turn: its id, and the stored turn it nearly repeats (if any).

    `similarity` is the cosine similarity to the closest turn stored before it (0.0 in an empty memory);
    `existed` is True when the very same turn was already stored (it was updated in place).
    """

    id: str
    duplicate_of: str | None
    similarity: float
    existed: bool = False


@dataclass(frozen=True)
class StoredTurn:
    """A turn as stored: id, namespace, question, answer and the full metadata."""

    id: str
    namespace: str
    question: str
    answer: str
    metadata: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.metadata.get("run_id", ""))

    @property
    def turn(self) -> int:
        return int(self.metadata.get("turn", 0))

    @property
    def judge_score(self) -> float:
        return float(self.metadata.get("judge_score", 0.0))

    @property
    def objective(self) -> str:
        return str(self.metadata.get("objective", ""))

    @property
    def duplicate_of(self) -> str | None:
        return str(self.metadata.get("duplicate_of") or "") or None

    @property
    def teachback(self) -> str:
        """The student's restatement, when it passed the gate ("" otherwise, and in older records)."""
        return str(self.metadata.get("teachback", "")) if self.metadata.get("teachback_accepted") else ""

    @property
    def facts(self) -> list[int]:
        """The curriculum facts the turn stated (none in older records)."""
        return [int(f) for f in str(self.metadata.get("facts", "")).split(",") if f.strip().isdigit()]

    def examples(self) -> list[tuple[str, str]]:
        """What the turn teaches: the question with the teacher's answer, and with the student's own
        accepted restatement (a second wording of the same facts)."""
        pairs = [(self.question, self.answer)]
        if self.teachback and self.teachback.strip() != self.answer.strip():
            pairs.append((self.question, self.teachback))
        return pairs


@dataclass(frozen=True)
class Hit(StoredTurn):
    """A search result: a stored turn and its cosine similarity to the query (1.0 = same direction)."""

    similarity: float = 0.0


@dataclass(frozen=True)
class NamespaceStats:
    namespace: str
    collection: str
    embedder: str
    turns: int  # canonical turns: the training examples
    duplicates: int
    runs: int
    last_write: str  # ISO time of the newest record, "" when empty


@dataclass(frozen=True)
class StoreStats:
    location: str
    namespaces: list[NamespaceStats] = field(default_factory=list)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    written: int
    skipped_duplicates: int
    skipped_low_score: int


class MemoryStore:
    """The memory at one folder or server. Build it with `MemoryStore.open`."""

    def __init__(
        self,
        client: ClientAPI,
        location: str,
        *,
        remote: bool,
        embedder: str | None = None,
        duplicate_threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
    ) -> None:
        self._client = client
        self.location = location
        self.remote = remote
        self.embedder = embedder
        self.duplicate_threshold = duplicate_threshold
        self._collections: dict[str, tuple[Collection, Any]] = {}

    # ---- opening ---------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path | None = None,
        url: str | None = None,
        embedder: str | None = None,
        duplicate_threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
        create: bool = True,
        token: str | None = None,
    ) -> MemoryStore:
        """Open the memory in folder `path` (default .teachback/memory here) or on the server at `url`.

        With `create=False` a folder that does not exist is an error instead of a new, empty memory.

        A server that wants a token (a batch's, memory/server.py) gets `token`, default the environment's
        $TEACHBACK_MEMORY_TOKEN, as `Authorization: Bearer`; one that wants none ignores it.

        `embedder` (see memory/embeddings.py; default minilm) is used for namespaces created from now on;
        an existing namespace always uses the embedder it was made with, and naming a different one is an
        error rather than a silently useless search.
        """
        if not 0.0 < duplicate_threshold <= 1.0:
            raise MemoryStoreError(f"the duplicate threshold must be in (0, 1], got {duplicate_threshold}")
        if path is not None and url:
            raise MemoryStoreError("give a memory folder (--memory-dir) or a server (--memory-url), not both")
        import chromadb
        from chromadb.config import Settings

        if embedder is not None:
            from teachback.memory.embeddings import make_embedder

            make_embedder(embedder)  # an unknown or missing embedder fails here, before anything is created
        settings = Settings(anonymized_telemetry=False)
        if url:
            from chromadb.errors import ChromaAuthError

            host, port, ssl = _parse_url(url)
            token = (os.environ.get(MEMORY_TOKEN_ENV, "") if token is None else token).strip()
            headers = {"Authorization": f"Bearer {token}"} if token else None
            try:
                client = chromadb.HttpClient(
                    host=host, port=port, ssl=ssl, headers=headers, settings=settings
                )
                client.heartbeat()
            except ChromaAuthError:
                said = f"refused the token in ${MEMORY_TOKEN_ENV}" if token else "wants a token"
                raise MemoryStoreError(
                    f"the chroma server at {url} {said}: set {MEMORY_TOKEN_ENV} to the server's token "
                    "(a batch passes its own to its runs)"
                ) from None
            except Exception as exc:
                raise MemoryStoreError(
                    f"cannot reach the chroma server at {url}: {first_line(exc)}; start one with "
                    f"`chroma run --path DIR --host {host} --port {port}` or check --memory-url"
                ) from exc
            return cls(client, url, remote=True, embedder=embedder, duplicate_threshold=duplicate_threshold)

        folder = (path if path is not None else Path.cwd() / DEFAULT_DIR).expanduser()
        if folder.exists() and not folder.is_dir():
            raise MemoryStoreError(f"memory folder {folder} is a file: point --memory-dir at a folder")
        if not create and not folder.is_dir():
            raise MemoryStoreError(
                f"no memory at {folder} yet: run a scenario first, or point --memory-dir at a memory folder"
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
            client = chromadb.PersistentClient(path=str(folder), settings=settings)
        except Exception as exc:
            raise MemoryStoreError(
                f"cannot open the memory at {folder}: {first_line(exc)}; check that the folder is writable "
                "and holds a chromadb store (or is empty), or point --memory-dir elsewhere"
            ) from exc
        return cls(
            client, str(folder), remote=False, embedder=embedder, duplicate_threshold=duplicate_threshold
        )

    # ---- writing ---------------------------------------------------------------------------------------

    def add_turn(self, namespace: str, *, question: str, answer: str, **provenance: Any) -> AddResult:
        """Store one accepted turn; `provenance` holds TurnRecord's other fields (run_id, turn, ...)."""
        try:
            record = TurnRecord(question=question, answer=answer, **provenance)
        except TypeError as exc:
            raise MemoryStoreError(f"add_turn: {exc}") from exc
        return self.add_turns(namespace, [record])[0]

    def add_turns(self, namespace: str, records: Sequence[TurnRecord]) -> list[AddResult]:
        """Store many turns at once (embedded and upserted in batches), in order; one AddResult each."""
        collection, ef = self._collection(namespace, create=True)
        results: list[AddResult] = []
        for start in range(0, len(records), _CHUNK):
            results += self._add_chunk(collection, ef, namespace, records[start : start + _CHUNK])
        return results

    def _add_chunk(
        self, collection: Collection, ef: Any, namespace: str, records: Sequence[TurnRecord]
    ) -> list[AddResult]:
        now = _now()
        ids = [turn_id(namespace, r.question, r.answer) for r in records]
        vectors = turn_vectors(ef, [r.question for r in records], [r.answer for r in records])
        with self._guard("reading stored turns"):
            got = collection.get(ids=list(dict.fromkeys(ids)), include=["metadatas"])
            existing = {i: dict(m or {}) for i, m in zip(got["ids"], got["metadatas"] or [], strict=False)}
            fresh = [i for i, id_ in enumerate(ids) if id_ not in existing and id_ not in ids[:i]]
            nearest = self._nearest(collection, vectors[fresh]) if fresh else []
        nearest_of = dict(zip(fresh, nearest, strict=True))

        results: list[AddResult] = []
        batch: dict[str, tuple[Any, str, dict[str, Any]]] = {}  # id -> (vector, document, metadata)
        canonical_rows: list[int] = []  # rows of this chunk stored as canonical turns
        for i, (record, id_) in enumerate(zip(records, ids, strict=True)):
            if id_ in existing or id_ in batch:
                before: dict[str, Any] = existing.get(id_) or batch[id_][2]
                dup = str(before.get("duplicate_of") or "")
                created = str(before.get("created_at") or now)
                similarity = float(before.get("nearest_similarity", 0.0))
                results.append(AddResult(id_, dup or None, similarity, existed=True))
                if id_ in batch:
                    continue
            else:
                best_id, similarity = nearest_of[i]
                if canonical_rows:  # turns earlier in this chunk are not in the collection yet
                    sims = vectors[canonical_rows] @ vectors[i]
                    j = int(sims.argmax())
                    if float(sims[j]) > similarity:
                        best_id, similarity = ids[canonical_rows[j]], float(sims[j])
                dup = best_id if best_id and similarity >= self.duplicate_threshold else ""
                created = now
                if not dup:
                    canonical_rows.append(i)
                results.append(AddResult(id_, dup or None, round(similarity, 6)))
            meta = _metadata(
                record, created_at=created, updated_at=now, duplicate_of=dup, nearest_similarity=similarity
            )
            batch[id_] = (vectors[i], document_of(record.question, record.answer), meta)
        with self._guard(f"writing {len(batch)} turn(s) to namespace {namespace!r}"):
            collection.upsert(
                ids=list(batch),
                embeddings=[v for v, _, _ in batch.values()],
                documents=[d for _, d, _ in batch.values()],
                metadatas=[m for _, _, m in batch.values()],
            )
        return results

    def _nearest(self, collection: Collection, vectors: np.ndarray) -> list[tuple[str, float]]:
        """For each vector: the canonical turn its closest stored turn stands for, and the similarity."""
        if collection.count() == 0:
            return [("", 0.0)] * len(vectors)
        got = collection.query(query_embeddings=vectors, n_results=1, include=["metadatas", "distances"])
        out: list[tuple[str, float]] = []
        for ids, metas, dists in zip(got["ids"], got["metadatas"] or [], got["distances"] or [], strict=True):
            if not ids:
                out.append(("", 0.0))
                continue
            canonical = str((metas[0] or {}).get("duplicate_of") or "") or ids[0]
            out.append((canonical, 1.0 - float(dists[0])))
        return out

    def delete_run(self, namespace: str | None, run_id: str, from_turn: int | None = None) -> int:
        """Delete the turns of run `run_id` (those from turn `from_turn` on, if given); how many went.

        `namespace=None` deletes in every namespace. Duplicates of a deleted turn survive: the oldest is
        promoted to a canonical turn and the others point at it.
        """
        where: dict[str, Any] = {"run_id": run_id}
        if from_turn is not None:
            where = {"$and": [{"run_id": run_id}, {"turn": {"$gte": int(from_turn)}}]}
        deleted = 0
        for ns in self._targets(namespace):
            collection, _ = self._collection(ns)
            with self._guard(f"deleting run {run_id!r} from namespace {ns!r}"):
                ids = collection.get(where=where, include=[])["ids"]
                if not ids:
                    continue
                collection.delete(ids=ids)
                self._promote_orphans(collection, ids)
            deleted += len(ids)
        return deleted

    def _promote_orphans(self, collection: Collection, gone: list[str]) -> None:
        orphans: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for start in range(0, len(gone), 500):
            where: Any = {"duplicate_of": {"$in": gone[start : start + 500]}}
            got = collection.get(where=where, include=["metadatas"])
            for id_, meta in zip(got["ids"], got["metadatas"] or [], strict=False):
                m = dict(meta or {})
                orphans.setdefault(str(m["duplicate_of"]), []).append((id_, m))
        updates: dict[str, dict[str, Any]] = {}
        for group in orphans.values():
            group.sort(
                key=lambda item: (str(item[1].get("created_at", "")), int(item[1].get("turn", 0)), item[0])
            )
            head = group[0][0]
            updates[head] = {**group[0][1], "duplicate_of": ""}
            for id_, meta in group[1:]:
                updates[id_] = {**meta, "duplicate_of": head}
        if updates:
            collection.update(ids=list(updates), metadatas=list(updates.values()))

    def clear(self, namespace: str) -> None:
        """Delete a namespace and everything in it."""
        name = collection_name(namespace)
        with self._guard(f"deleting namespace {namespace!r}"):
            if any(ns == namespace for ns in self.namespaces()):
                self._client.delete_collection(name)
        self._collections.pop(namespace, None)

    # ---- reading ---------------------------------------------------------------------------------------

    def search(
        self, namespace: str | None, query: str, k: int = 5, include_duplicates: bool = False
    ) -> list[Hit]:
        """The `k` stored turns most similar to `query`, best first (`namespace=None`: all namespaces)."""
        from teachback.memory.embeddings import embed_texts

        if k < 1:
            raise MemoryStoreError(f"search needs k >= 1, got {k}")
        hits: list[Hit] = []
        vectors: dict[str, Any] = {}  # one query vector per embedder, however many namespaces use it
        for ns in self._targets(namespace):
            collection, ef = self._collection(ns)
            key = f"{ef.name()}:{sorted(ef.get_config().items())}"
            if key not in vectors:
                vectors[key] = embed_texts(ef, [query])
            vector = vectors[key]
            with self._guard(f"searching namespace {ns!r}"):
                total = collection.count()
                want = k if include_duplicates else 2 * k + 2  # room for duplicates dropped below
                while total:
                    n = min(total, want)
                    got = collection.query(
                        query_embeddings=vector, n_results=n, include=["metadatas", "distances", "documents"]
                    )
                    found = [
                        Hit(**asdict(_stored(ns, id_, meta, doc)), similarity=round(1.0 - float(dist), 6))
                        for id_, meta, dist, doc in zip(
                            got["ids"][0],
                            (got["metadatas"] or [[]])[0],
                            (got["distances"] or [[]])[0],
                            (got["documents"] or [[]])[0],
                            strict=True,
                        )
                    ]
                    kept = [h for h in found if include_duplicates or h.duplicate_of is None]
                    if len(kept) >= k or n >= total:
                        hits += kept[:k]
                        break
                    want *= 4
        hits.sort(key=lambda h: -h.similarity)
        return hits[:k]

    def entries(
        self, namespace: str | None = None, run: str | None = None, include_duplicates: bool = True
    ) -> list[StoredTurn]:
        """Stored turns in the order they were learned (`namespace=None`: all namespaces)."""
        turns: list[StoredTurn] = []
        for ns in self._targets(namespace):
            collection, _ = self._collection(ns)
            for id_, meta, doc in self._all(collection, {"run_id": run} if run else None, f"listing {ns!r}"):
                turn = _stored(ns, id_, meta, doc)
                if include_duplicates or turn.duplicate_of is None:
                    turns.append(turn)
        turns.sort(key=lambda t: (t.namespace, str(t.metadata.get("created_at", "")), t.run_id, t.turn, t.id))
        return turns

    def stats(self) -> StoreStats:
        """Per namespace: canonical turns, duplicates, runs, embedder and the time of the last write."""
        from teachback.memory.embeddings import spec_of

        out: list[NamespaceStats] = []
        for ns in self.namespaces():
            collection, ef = self._collection(ns)
            turns = dups = 0
            runs: set[str] = set()
            last = ""
            for _, meta, _ in self._all(collection, None, f"counting {ns!r}", documents=False):
                if meta.get("duplicate_of"):
                    dups += 1
                else:
                    turns += 1
                runs.add(str(meta.get("run_id", "")))
                last = max(last, str(meta.get("updated_at") or meta.get("created_at") or ""))
            out.append(NamespaceStats(ns, collection.name, spec_of(ef), turns, dups, len(runs), last))
        return StoreStats(self.location, out)

    def export(
        self,
        namespace: str | None,
        fmt: str,
        out: Path,
        include_duplicates: bool = False,
        min_score: float = 0.0,
    ) -> ExportResult:
        """Write the stored turns as training data (see memory/export.py for the formats)."""
        from teachback.memory.export import write_jsonl

        kept: list[StoredTurn] = []
        dups = low = 0
        for turn in self.entries(namespace):
            if turn.duplicate_of is not None and not include_duplicates:
                dups += 1
            elif turn.judge_score < min_score:
                low += 1
            else:
                kept.append(turn)
        written = write_jsonl(((t.question, t.answer) for t in kept), fmt, out)
        return ExportResult(Path(out), written, dups, low)

    def namespaces(self) -> list[str]:
        """The namespaces stored here, sorted (collections not made by teachback are ignored)."""
        with self._guard("listing namespaces"):
            collections = self._client.list_collections()
        names = [str((c.metadata or {}).get(COLLECTION_MARK)) for c in collections]
        return sorted(n for n in names if n and n != "None")

    # ---- internals ---------------------------------------------------------------------------------------

    def _targets(self, namespace: str | None) -> list[str]:
        if namespace is None:
            return self.namespaces()
        self._collection(namespace)  # raises when it does not exist
        return [namespace]

    def _collection(self, namespace: str, create: bool = False) -> tuple[Collection, Any]:
        """The namespace's collection and its embedder; a missing one is created only if `create`."""
        if namespace in self._collections:
            return self._collections[namespace]
        from chromadb.errors import NotFoundError

        from teachback.memory.embeddings import embedder_from_config, make_embedder, spec_of

        name = collection_name(namespace)
        try:
            with self._guard(f"opening namespace {namespace!r}"):
                collection = self._client.get_collection(name, embedding_function=None)
        except MemoryStoreError as exc:
            if not isinstance(exc.__cause__, NotFoundError) and "does not exist" not in str(exc):
                raise
            if not create:
                raise MemoryStoreError(
                    f"memory at {self.location} has no namespace {namespace!r}; "
                    "`teachback memory stats` lists the namespaces"
                ) from None
            ef = make_embedder(self.embedder)
            with self._guard(f"creating namespace {namespace!r}"):
                collection = self._client.get_or_create_collection(
                    name,
                    # chromadb types it as taking documents or images (invariantly); ours embeds text
                    embedding_function=ef,  # type: ignore[arg-type]
                    configuration={"hnsw": {"space": "cosine"}},
                    metadata={COLLECTION_MARK: namespace, "teachback_schema": RECORD_VERSION},
                )
        marked = (collection.metadata or {}).get(COLLECTION_MARK)
        if marked != namespace:
            raise MemoryStoreError(
                f"collection {name!r} at {self.location} is not teachback's memory of namespace "
                f"{namespace!r} (it belongs to {marked!r}); use another namespace"
            )
        ef = embedder_from_config(collection.configuration_json.get("embedding_function"), name)
        if self.embedder is not None:
            wanted = make_embedder(self.embedder)
            if (wanted.name(), wanted.get_config()) != (ef.name(), ef.get_config()):
                raise MemoryStoreError(
                    f"namespace {namespace!r} was stored with embedder {spec_of(ef)!r}, not "
                    f"{spec_of(wanted)!r}: open it without --embedder (or with that one), "
                    "or use another namespace"
                )
        self._collections[namespace] = (collection, ef)
        return collection, ef

    def _all(
        self, collection: Collection, where: dict[str, Any] | None, action: str, documents: bool = True
    ) -> Iterator[tuple[str, dict[str, Any], str]]:
        include: Any = ["metadatas", "documents"] if documents else ["metadatas"]
        offset = 0
        while True:
            with self._guard(action):
                got = collection.get(where=where, include=include, limit=_PAGE, offset=offset)
            docs = got.get("documents") or [""] * len(got["ids"])
            yield from zip(got["ids"], [dict(m or {}) for m in got["metadatas"] or []], docs, strict=True)
            if len(got["ids"]) < _PAGE:
                return
            offset += _PAGE

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Turn any chromadb failure into one MemoryStoreError line with the location and a next step."""
        try:
            yield
        except MemoryStoreError:
            raise
        except Exception as exc:
            hint = (
                "is the chroma server still running there?"
                if self.remote
                else "check that the folder is writable, has room, and is not a newer chromadb's store"
            )
            raise MemoryStoreError(
                f"memory at {self.location}: {action} failed: {first_line(exc)}; {hint}"
            ) from exc


# ---- ids, names and records ----------------------------------------------------------------------------


def normalise_text(text: str) -> str:
    """The form two texts must share to count as the same turn.

    >>> normalise_text("  What is\\tthe CAPITAL?\\n")
    'what is the capital?'
    """
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def content_sha256(question: str, answer: str) -> str:
    return hashlib.sha256(f"{normalise_text(question)}\0{normalise_text(answer)}".encode()).hexdigest()


def turn_id(namespace: str, question: str, answer: str) -> str:
    """The record id: the same namespace and (normalised) content always give the same id.

    >>> a = turn_id("vellmar", "What is the capital?", "Korrin.")
    >>> a == turn_id("vellmar", "what is the  capital?", "Korrin.")
    True
    >>> a == turn_id("tessel", "What is the capital?", "Korrin.")
    False
    """
    digest = hashlib.sha256(f"{namespace}\0{content_sha256(question, answer)}".encode()).hexdigest()
    return "t" + digest[:32]


def turn_vectors(ef: Any, questions: Sequence[str], answers: Sequence[str]) -> np.ndarray:
    """The vectors turns are stored under: the normalised sum of the question's and the answer's."""
    import numpy as np

    from teachback.memory.embeddings import embed_texts

    n = len(questions)
    both = embed_texts(ef, [*questions, *answers])
    summed = both[:n] + both[n:]
    return summed / np.clip(np.linalg.norm(summed, axis=1, keepdims=True), 1e-12, None)


def document_of(question: str, answer: str) -> str:
    """What is embedded for a turn: the question, a blank line, the answer."""
    return f"{question.strip()}\n\n{answer.strip()}"


def collection_name(namespace: str) -> str:
    """A chromadb collection name for a namespace: 3-63 characters of [A-Za-z0-9._-], starting and ending
    with a letter or digit, no '..', not an IPv4 address. A name that had to change gets a short hash of
    the original, so two namespaces never share a collection.

    >>> collection_name("vellmar-test")
    'vellmar-test'
    >>> collection_name("Vellmar / student A")
    'Vellmar-student-A-316fba81'
    >>> collection_name("ab")
    'ab-fb8e20fc'
    """
    if not namespace or not namespace.strip():
        raise MemoryStoreError("a memory namespace cannot be empty")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", namespace)
    name = re.sub(r"\.{2,}", ".", name).strip("._-")
    is_ipv4 = re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", name) is not None
    if name != namespace or not 3 <= len(name) <= 63 or is_ipv4:
        suffix = hashlib.sha256(namespace.encode()).hexdigest()[:8]
        name = f"{name[:54]}-{suffix}" if name else f"ns-{suffix}"
    return name


def _metadata(record: TurnRecord, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "record_version": RECORD_VERSION,
        "question": record.question,
        "answer": record.answer,
        "scenario": record.scenario,
        "run_id": record.run_id,
        "turn": int(record.turn),
        "objective": record.objective,
        "teacher_model": record.teacher_model,
        "student_model": record.student_model,
        "judge_score": float(record.judge_score),
        "judge_reason": record.judge_reason,
        "teachback": record.teachback,
        "teachback_score": float(record.teachback_score),
        "teachback_accepted": bool(record.teachback_accepted),
        "facts": ",".join(str(f) for f in record.facts),  # chromadb metadata holds no lists
        "teachback_version": __version__,
        "content_sha256": content_sha256(record.question, record.answer),
    }
    meta.update(extra)
    meta["nearest_similarity"] = round(float(meta.get("nearest_similarity", 0.0)), 6)
    return meta


def _stored(namespace: str, id_: str, meta: dict[str, Any] | Any, document: str | None) -> StoredTurn:
    m = dict(meta or {})
    question = str(m.get("question", ""))
    answer = str(m.get("answer", "")) if "answer" in m else str(document or "")
    return StoredTurn(id=id_, namespace=namespace, question=question, answer=answer, metadata=m)


# a host name's labels (an underscore allowed: docker compose service names have them) or an IPv4 address
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}(\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*\.?")


def memory_url_problem(url: str) -> str | None:
    """Why `url` is not a chroma server's http(s)://host:port, or None when it is one (`host:port` alone
    means http). Nothing is contacted.

    >>> memory_url_problem("ftp://host:8000")
    "'ftp://host:8000': the scheme must be http or https, not ftp; give http://host:port"
    """
    shown = repr(url)
    hint = "give http://host:port"
    text = url.strip()
    if not text or any(c.isspace() or not c.isprintable() for c in text):
        return f"{shown}: not a URL (empty, or holds spaces); {hint}"
    parsed = urlparse(text if "://" in text else f"http://{text}")
    if parsed.scheme not in ("http", "https"):
        return f"{shown}: the scheme must be http or https, not {parsed.scheme or 'nothing'}; {hint}"
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError as exc:
        return f"{shown}: {exc}; {hint}"
    if not host:
        return f"{shown}: no host; {hint}"
    bracketed = parsed.netloc.rpartition("@")[2].startswith("[")
    if not bracketed and not _HOST.fullmatch(host):
        return f"{shown}: {host!r} is not a host name or address; {hint}"
    if parsed.username is not None or parsed.password is not None:
        return f"{shown}: a user or password in the URL is not supported; {hint}"
    if port is not None and not 0 < port < 65536:
        return f"{shown}: port {port} is out of range (1 to 65535); {hint}"
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment or parsed.params:
        return f"{shown}: a chroma server URL has no path or query; {hint}"
    return None


def _parse_url(url: str) -> tuple[str, int, bool]:
    problem = memory_url_problem(url)
    if problem:
        raise MemoryStoreError(f"memory url {problem}")
    parsed = urlparse(url.strip() if "://" in url else f"http://{url.strip()}")
    assert parsed.hostname is not None
    port = parsed.port or (443 if parsed.scheme == "https" else 8000)
    return parsed.hostname, port, parsed.scheme == "https"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
