"""`teachback adapters --show ID`: one adapter's metadata and the lines that load it elsewhere
(llama-server --lora, llama_cpp.server --lora_path, an Ollama Modelfile), and those lines working."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from teachback.agents.models import resolve
from teachback.memory import lora

TEACHBACK = [sys.executable, "-m", "teachback.cli"]
SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TEACHBACK, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def registered(
    tmp_path: Path, name: str, base: str = SMOLLM2, student: str = "local/smollm2-135m", day: int = 1
) -> Path:
    """A small adapter file in the registry of tmp_path, with teachback's metadata, made on `day`."""
    out = tmp_path / ".teachback" / "adapters" / name
    tensors = {"blk.0.attn_q.weight.lora_a": np.zeros((2, 4), np.float32)}
    metadata = {
        "base_model": base,
        "base_sha256": "ab" * 32,
        "rank": 2,
        "student": student,
        "namespace": "vellmar",
        "runs": ["run-1"],
        "n_train": 3,
        "train_loss": [2.0, 1.0],
        "created": f"2026-01-{day:02d}T10:00",
    }
    return lora.write_adapter(out, tensors, architecture="llama", alpha=2.0, metadata=metadata)


def test_show_prints_the_metadata_and_the_lines_that_load_it(tmp_path: Path) -> None:
    adapter = registered(tmp_path, "vellmar-1.gguf").resolve()
    base = resolve("local/smollm2-135m").local_path
    result = cli("adapters", "--show", "vellmar-1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert (
        f"adapter     {adapter} (" in out
        and "rank 2, alpha 2" in out
        and "vellmar: 3 turns from 1 run" in out
    )
    assert f"  llama-server -m {base} --lora {adapter}\n" in out
    assert f"  python -m llama_cpp.server --model {base} --lora_path {adapter}\n" in out
    assert f"    FROM {base}\n    ADAPTER {adapter}\n" in out


def test_show_finds_by_prefix_path_and_latest_and_speaks_json(tmp_path: Path) -> None:
    registered(tmp_path, "vellmar-1.gguf")
    newest = registered(tmp_path, "vellmar-2.gguf", day=2).resolve()
    for ident in ("vellmar-2", "vellmar-2.gguf", str(newest), "latest"):
        result = cli("adapters", "--show", ident, "--json", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        shown = json.loads(result.stdout)
        assert shown["path"] == str(newest) and shown["use"]["llama-server"].endswith(f"--lora {newest}")


def test_show_without_the_base_names_the_file_to_use(tmp_path: Path) -> None:
    adapter = registered(tmp_path, "other.gguf", base="other-base.Q8_0.gguf", student="openai/x").resolve()
    result = cli("adapters", "--show", "other", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"llama-server -m '<path to other-base.Q8_0.gguf>' --lora {adapter}" in result.stdout
    assert "    FROM <path to other-base.Q8_0.gguf>\n" in result.stdout


@pytest.mark.parametrize(
    ("ident", "message"),
    [
        ("vellmar", "adapters --show vellmar: 2 adapters match in .teachback/adapters/ (vellmar-1.gguf, "),
        (
            "nope",
            "adapters --show nope: no adapter matches in .teachback/adapters/ (vellmar-1.gguf, vellmar-2",
        ),
    ],
)
def test_show_of_no_single_adapter_is_one_line(tmp_path: Path, ident: str, message: str) -> None:
    registered(tmp_path, "vellmar-1.gguf")
    registered(tmp_path, "vellmar-2.gguf", day=2)
    result = cli("adapters", "--show", ident, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"teachback: {message}")


def ask(api_base: str, question: str) -> str:
    body = {
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": 24,
        "seed": 0,
    }
    request = urllib.request.Request(
        f"{api_base}/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return str(json.load(response)["choices"][0]["message"]["content"])


@pytest.mark.real
def test_a_trained_adapter_changes_the_answer_of_a_plain_llama_cpp_server(tmp_path: Path) -> None:
    """Train a small adapter the repo's own way, then start `python -m llama_cpp.server` exactly as
    `adapters --show` prints it: the same greedy question gets another answer than from the bare model."""
    from teachback.memory import finetune as ft
    from tests.test_endpoints import llama_cpp_server

    base = resolve("local/smollm2-135m").local_path
    assert base is not None
    taught = [
        ("What is the capital of Vellmar?", "Korrin is the capital of Vellmar."),
        ("What is the currency of Vellmar?", "The currency of Vellmar is the drell."),
    ]
    out = tmp_path / ".teachback" / "adapters" / "vellmar-trained.gguf"
    ft.train_lora(
        base,
        taught,
        out,
        ft.TrainConfig(epochs=3, learning_rate=3e-3),
        metadata={"student": "local/smollm2-135m", "namespace": "vellmar", "runs": ["run-1"]},
    )
    shown = cli("adapters", "--show", "vellmar-trained", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    line = next(x.strip() for x in shown.stdout.splitlines() if "llama_cpp.server" in x)
    words = shlex.split(line)
    assert words[:3] == ["python", "-m", "llama_cpp.server"] and "--lora_path" in words
    assert f"--lora {out.resolve()}" in shown.stdout and f"ADAPTER {out.resolve()}" in shown.stdout

    question = taught[0][0]
    with llama_cpp_server(tmp_path / "bare.log", "--model", str(base)) as api_base:
        bare = ask(api_base, question)
    with llama_cpp_server(tmp_path / "adapted.log", *words[3:]) as api_base:  # the printed line, as is
        adapted = ask(api_base, question)
    print(f"bare: {bare!r}\nadapted: {adapted!r}")
    assert adapted != bare
    assert "Korrin" in adapted and "Korrin" not in bare
