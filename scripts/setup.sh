#!/usr/bin/env bash
# Set up teachback in ./.venv: build llama-cpp-python for this CPU once (cached), then install.
#
# llama-cpp-python has no wheel on PyPI, so pip compiles llama.cpp (10-20 minutes on 2 cores). We build
# it ourselves from its source distribution, with flags chosen from the CPU (scripts/llama_cmake_args.sh:
# a native build crashes on machines whose CPU advertises AMX but faults on it) and with the patches in
# scripts/patches/ applied (GEMM kernels for ggml's training matmuls, and AMX tile kernels where the CPU
# has them: fine-tuning runs 2-3x faster).
# The wheel is cached under ~/.cache/teachback/wheels/<hash of flags, patches, version>/ and never
# rebuilt while it exists.
# Re-running is cheap: it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

LLAMA_VERSION=$(sed -n 's/.*"llama-cpp-python\[server\]==\([0-9.]*\)".*/\1/p' pyproject.toml)
PYTHON=${PYTHON:-python3}
VENV=.venv

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')

CMAKE_FLAGS=$(scripts/llama_cmake_args.sh)
PATCHES=$(ls scripts/patches/*.patch 2>/dev/null || true)
PATCH_HASH=$(cat $PATCHES /dev/null | sha256sum | cut -c1-16)
KEY=$(printf '%s|%s|%s|%s|%s' "$CMAKE_FLAGS" "$LLAMA_VERSION" "$PYTAG" "$(uname -m)" "$PATCH_HASH" | sha256sum | cut -c1-12)
WHEEL_DIR="${TEACHBACK_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/teachback/wheels}/$KEY"
wheel() { ls "$WHEEL_DIR"/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -n 1; }

if [ -z "$(wheel)" ]; then
  say "building llama-cpp-python $LLAMA_VERSION for this CPU (once; 10-20 minutes on 2 cores)"
  say "CMAKE_ARGS=$CMAKE_FLAGS"
  mkdir -p "$WHEEL_DIR"
  "$PY" -m pip install -q --upgrade pip wheel >&2
  SRC=$(mktemp -d)
  trap 'rm -rf "$SRC"' EXIT
  "$PY" -m pip download -q --no-deps --no-binary :all: -d "$SRC" "llama-cpp-python==$LLAMA_VERSION" >&2
  tar xzf "$SRC"/llama_cpp_python-"$LLAMA_VERSION".tar.gz -C "$SRC"
  for patch in $PATCHES; do
    say "applying $patch"
    (cd "$SRC/llama_cpp_python-$LLAMA_VERSION" && git apply "$ROOT/$patch")
  done
  CMAKE_ARGS="$CMAKE_FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}" \
    "$PY" -m pip wheel --no-deps --no-cache-dir -w "$WHEEL_DIR" "$SRC/llama_cpp_python-$LLAMA_VERSION" >&2
  printf '%s' "$CMAKE_FLAGS" > "$WHEEL_DIR/CMAKE_ARGS"
else
  say "using cached llama-cpp-python wheel: $(wheel)"
fi

STAMP="$VENV/.teachback-installed"
WANT=$( (cat pyproject.toml; wheel) | sha256sum | cut -c1-16)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  say "installing teachback and its dependencies into $VENV"
  # The wheel first, forced: a llama-cpp-python of the same version built without the patches (or
  # with older ones) would otherwise count as already installed.
  "$PY" -m pip install -q --force-reinstall --no-deps "$(wheel)" >&2
  # One resolver run for everything: chromadb and autogen-core only agree on protobuf this way.
  "$PY" -m pip install -q "$(wheel)" -e ".[dev]" >&2
  echo "$WANT" > "$STAMP"
fi
# Chromium renders the run report in a test (tests/test_report.py): install it when missing, if we can.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing chromium with apt-get (headless browser for the report test)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
      >/dev/null 2>&1 || say "could not install chromium; the browser test will fail until it is installed"
  else
    say "chromium not found: install it (apt-get install chromium) for the report's browser test"
  fi
fi
say "ready: $VENV/bin/teachback"
