"""`lint-imports` on teachback's layers (pyproject.toml, [tool.importlinter]), laid out as installed.

    .venv/bin/python scripts/lint_imports.py       # exit 0: every contract kept; the report as it prints

The packages install as `teachback.agents`, `teachback.memory`, ... from top-level folders (pyproject's
[tool.setuptools] package-dir), and import-linter finds a package's modules by walking its folder: run
in the checkout, it sees `teachback/` without them ("module teachback.scenarios does not exist"). This
lays `teachback/` out as it installs, in a temporary folder of symbolic links to the checkout's files, and
runs lint-imports there. tests/test_layers.py runs it, so `make test` checks the layers.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: import-linter brings tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pyproject.toml"


def lay_out(package_dir: dict[str, str], into: Path) -> None:
    """Each package's modules, linked where the installed package has them (`teachback.agents` ->
    `into/teachback/agents/`)."""
    for package, folder in package_dir.items():
        target = into.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for module in sorted((ROOT / folder).glob("*.py")):
            (target / module.name).symlink_to(module)


def package_dir() -> dict[str, str]:
    """pyproject's [tool.setuptools] package-dir: each installed package and the folder it comes from."""
    return dict(tomllib.loads(CONFIG.read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"])


def main() -> int:
    lint = Path(sys.executable).with_name("lint-imports")
    with tempfile.TemporaryDirectory(prefix="teachback-layers-") as tmp:
        lay_out(package_dir(), Path(tmp))
        return subprocess.run([str(lint), "--no-cache", "--no-logo", str(CONFIG)], cwd=tmp).returncode


if __name__ == "__main__":
    sys.exit(main())
