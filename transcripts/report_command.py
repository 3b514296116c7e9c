"""`teachback report RUN_DIR [--out DIR]`: write a run's report (HTML, PNG charts, metrics JSON).

teachback report transcripts/runs/<run>/          # -> <run>/report/report.html, *.png, metrics.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report", help="write a run's report: one offline HTML page, its charts as PNG, metrics as JSON"
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder (holding transcript.jsonl)")
    p.add_argument("--out", type=Path, metavar="DIR", help="where to write (default RUN_DIR/report/)")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from teachback.transcripts.report import write_report

    for path in write_report(args.run_dir, args.out):
        print(path)
    return 0
