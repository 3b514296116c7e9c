"""`teachback adapters`: the fine-tuned adapters in the registry, with what each was trained from.

teachback adapters [--dir DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("adapters", help="list the fine-tuned LoRA adapters and their metadata")
    p.add_argument("--dir", type=Path, help="the registry folder (default .teachback/adapters)")
    p.add_argument("--json", action="store_true", help="print the metadata as JSON")
    p.set_defaults(func=run_adapters)


def _loss(values: list[Any]) -> str:
    shown = [f"{v:.3f}" for v in values if isinstance(v, float)]
    return " → ".join(shown[:1] + shown[-1:]) if len(shown) > 1 else "".join(shown) or "–"


def run_adapters(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from teachback.memory.adapters import ADAPTERS_DIR, list_adapters

    directory = args.dir or ADAPTERS_DIR
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
