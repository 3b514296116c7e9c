"""`teachback adapters`: the fine-tuned adapters in the registry, with what each was trained from.

teachback adapters [--dir DIR] [--json]
teachback adapters --show FILE|NAME|latest [--json]   one adapter, and the lines that load it elsewhere:

    llama-server -m BASE.gguf --lora ADAPTER.gguf
    python -m llama_cpp.server --model BASE.gguf --lora_path ADAPTER.gguf
    FROM BASE.gguf / ADAPTER ADAPTER.gguf             (an Ollama Modelfile)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from teachback.memory.adapters import AdapterInfo


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("adapters", help="list the fine-tuned LoRA adapters and their metadata")
    p.add_argument("--dir", type=Path, help="the registry folder (default .teachback/adapters)")
    p.add_argument("--json", action="store_true", help="print the metadata as JSON")
    p.add_argument(
        "--show",
        metavar="ID",
        help="one adapter (a file, its name in the registry, or latest): its metadata and the lines that "
        "load it in llama-server, llama_cpp.server and Ollama",
    )
    p.set_defaults(func=run_adapters)


def _loss(values: list[Any]) -> str:
    shown = [f"{v:.3f}" for v in values if isinstance(v, float)]
    return " → ".join(shown[:1] + shown[-1:]) if len(shown) > 1 else "".join(shown) or "–"


def run_adapters(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from teachback.memory.adapters import ADAPTERS_DIR, list_adapters

    directory = args.dir or ADAPTERS_DIR
    if args.show is not None:
        return show_adapter(args.show, directory, as_json=args.json)
    adapters = list_adapters(directory)
    if args.json:
        print(json.dumps([a.to_json() for a in adapters], indent=1))
        return 0
    console = Console(highlight=False)
    if not adapters:
        console.print(f"no adapters in {directory}/ yet; `teachback finetune --run-dir RUN_DIR` makes one")
        return 0
    table = Table(title=f"adapters in {directory}/ (newest last; `adapter: latest` takes the newest fit)")
    for column in (
        "file",
        "base model",
        "rank/α",
        "targets",
        "data",
        "trained on",
        "loss",
        "held-out",
        "created",
    ):
        table.add_column(column, overflow="fold")
    for a in adapters:
        runs = f"{a.n_train} turns, {len(a.runs)} run{'s' * (len(a.runs) != 1)}"
        table.add_row(
            a.path.name,
            f"{a.base_model} ({a.base_sha256[:8]})",
            f"{a.rank}/{a.alpha:g}",
            a.targets.replace("attn_", "").replace("ffn_", "") or "–",
            a.data_sha256[:8],
            f"{a.namespace}: {runs}" if a.namespace else runs,
            _loss(a.train_loss),
            _loss([v for v in a.val_loss if v is not None]),
            a.created.replace("T", " ")[:16],
        )
    console.print(table)
    return 0


def base_model_file(info: AdapterInfo) -> Path | None:
    """The base GGUF the adapter was trained on, where this machine has it: a bundled model of that file
    name, or the file the student's model string names."""
    from teachback.agents.models import LOCAL_MODELS, resolve
    from teachback.errors import TeachbackError

    candidates = [f"local/{m.name}" for m in LOCAL_MODELS.values() if m.file == info.base_model]
    if info.student.startswith(("local/", "local:")):
        candidates.insert(0, info.student)
    for spec in candidates:
        try:
            path = resolve(spec).local_path
        except TeachbackError:  # not installed here
            continue
        if path is not None and path.name == info.base_model:
            return path
    return None


def usage_lines(base: str, adapter: str) -> dict[str, str]:
    """How to load `adapter` on `base` elsewhere: llama.cpp's own server, llama-cpp-python's, Ollama."""
    import shlex

    b, a = shlex.quote(base), shlex.quote(adapter)
    return {
        "llama-server": f"llama-server -m {b} --lora {a}",
        "llama_cpp.server": f"python -m llama_cpp.server --model {b} --lora_path {a}",
        "ollama_modelfile": f"FROM {base}\nADAPTER {adapter}",
    }


def show_adapter(ident: str, directory: Path, *, as_json: bool = False) -> int:
    """`adapters --show ID`: the adapter's metadata, then the lines that load it elsewhere."""
    from teachback.memory.adapters import find_adapter

    info = find_adapter(ident, directory)
    base_path = base_model_file(info)
    base = str(base_path) if base_path else f"<path to {info.base_model or 'the base model'}>"
    adapter = str(info.path.resolve())
    use = usage_lines(base, adapter)
    if as_json:
        print(json.dumps({**info.to_json(), "path": adapter, "base_path": base, "use": use}, indent=1))
        return 0
    runs = f"{info.n_train} turns from {len(info.runs)} run{'s' * (len(info.runs) != 1)}"
    rows = [
        ("adapter", f"{adapter} ({info.size_bytes / 1e6:.1f} MB)"),
        (
            "base model",
            f"{info.base_model} (sha256 {info.base_sha256[:16]}...)"
            + (f", {info.student}" if info.student else ""),
        ),
        ("base file", str(base_path) if base_path else "not on this machine: use the file of that name"),
        ("lora", f"rank {info.rank}, alpha {info.alpha:g}, targets {info.targets or '–'}"),
        ("trained on", f"{info.namespace}: {runs}" if info.namespace else runs),
        (
            "loss",
            f"train {_loss(info.train_loss)}, held-out {_loss([v for v in info.val_loss if v is not None])}",
        ),
        ("data", f"sha256 {info.data_sha256[:16]}..., {info.epochs} epochs" if info.data_sha256 else "–"),
        ("created", info.created.replace("T", " ")[:19] or "–"),
    ]
    for name, value in rows:
        print(f"{name:<11} {value}")
    print("\nUse it elsewhere, on the base model it was trained on (an adapter fits that file only):")
    print(f"  {use['llama-server']}")
    print(f"  {use['llama_cpp.server']}")
    print("  an Ollama Modelfile (then `ollama create NAME -f Modelfile`):")
    for line in use["ollama_modelfile"].splitlines():
        print(f"    {line}")
    return 0
