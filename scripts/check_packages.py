"""Check the packages as they install: the layers (import-linter) and the types (mypy).

    .venv/bin/python scripts/check_packages.py imports    # the layers contract of pyproject.toml
    .venv/bin/python scripts/check_packages.py types      # mypy on every module of the packages

The packages install as `teachback.agents`, `teachback.memory`, ... from top-level folders (pyproject's
[tool.setuptools] package-dir). Neither tool follows that mapping: import-linter finds a package's modules
by walking its folder ("module teachback.scenarios does not exist"), and mypy, which cannot see through
the editable install's import hook, would take every `teachback.agents...` import as `Any`. So this lays
`teachback/` out as it installs, as symbolic links to the checkout's files, and runs the tool there;
mypy's lines name the checkout's files again (`agents/cast.py:12: error: ...`). The exit status is the
tool's. tests/test_layers.py runs `imports` (so `make test` checks the layers); `make lint` runs both.
"""

from __future__ import annotations

import re
import shutil
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
TYPES_VIEW = ROOT / "build" / "as-installed"  # a fixed place, so mypy's cache (.mypy_cache) is reused


def package_dir() -> dict[str, str]:
    """pyproject's [tool.setuptools] package-dir: each installed package and the folder it comes from."""
    return dict(tomllib.loads(CONFIG.read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"])


def lay_out(packages: dict[str, str], into: Path) -> None:
    """Each package's modules, linked where the installed package has them (`teachback.agents` ->
    `into/teachback/agents/`)."""
    for package, folder in packages.items():
        target = into.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for module in sorted((ROOT / folder).glob("*.py")):
            (target / module.name).symlink_to(module)


def imports() -> int:
    lint = Path(sys.executable).with_name("lint-imports")
    with tempfile.TemporaryDirectory(prefix="teachback-layers-") as tmp:
        lay_out(package_dir(), Path(tmp))
        return subprocess.run([str(lint), "--no-cache", "--no-logo", str(CONFIG)], cwd=tmp).returncode


def types() -> int:
    packages = package_dir()
    shutil.rmtree(TYPES_VIEW, ignore_errors=True)
    lay_out(packages, TYPES_VIEW)
    command = [sys.executable, "-m", "mypy", "-p", "teachback", "--config-file", str(CONFIG)]
    command += ["--cache-dir", str(ROOT / ".mypy_cache")]
    done = subprocess.run(command, cwd=TYPES_VIEW, capture_output=True, text=True)
    # the installed path of a module back to the checkout's: teachback/agents/cast.py -> agents/cast.py
    paths = sorted(
        ((name.replace(".", "/") + "/", folder + "/") for name, folder in packages.items()), reverse=True
    )
    pattern = re.compile("^(" + "|".join(re.escape(view) for view, _ in paths) + ")", re.MULTILINE)
    print(pattern.sub(lambda m: dict(paths)[m.group(1)], done.stdout + done.stderr), end="")
    return done.returncode


if __name__ == "__main__":
    checks = {"imports": imports, "types": types}
    if len(sys.argv) != 2 or sys.argv[1] not in checks:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(checks)}")
    sys.exit(checks[sys.argv[1]]())
