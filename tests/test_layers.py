"""The layers import only downward (pyproject.toml [tool.importlinter], ARCHITECTURE.md), in functions too;
mypy runs clean on the packages."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "check_packages.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_packages", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_layer_imports_only_the_layers_below_it() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "imports"], capture_output=True, text=True)
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    assert "Contracts: 1 kept, 0 broken." in report


def test_an_upward_import_inside_a_function_breaks_the_contract(tmp_path: Path) -> None:
    """The check sees every package as installed, and a lazy import counts as much as one at the top."""
    script = _script()
    script.lay_out(script.package_dir(), tmp_path)
    models = tmp_path / "teachback" / "agents" / "models.py"
    text = models.read_text(encoding="utf-8")
    models.unlink()  # a link to the checkout's file: write a changed copy in its place
    upward = "\n\ndef _seats():\n    from teachback.scenarios import seats\n\n    return seats\n"
    models.write_text(text + upward, encoding="utf-8")
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), "--no-cache", "--no-logo", str(script.CONFIG)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "teachback.agents is not allowed to import teachback.scenarios" in done.stdout
    assert "teachback.agents.models -> teachback.scenarios.seats" in done.stdout


def test_the_packages_type_check_clean() -> None:
    """mypy on the packages as they install (`make lint` runs the same), so CI keeps them clean too."""
    done = subprocess.run([sys.executable, str(SCRIPT), "types"], capture_output=True, text=True)
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    assert "Success: no issues found" in report
