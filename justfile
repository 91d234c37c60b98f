# Tessera's recipes. `just` lists them.

set shell := ["bash", "-euo", "pipefail", "-c"]

default:
    @just --list --unsorted

# --- develop ---------------------------------------------------------------------------------

# Lint, format check and strict typing: changes nothing.
[group('develop')]
check:
    ruff check .
    ruff format --check .
    mypy

# Format and fix what ruff can.
[group('develop')]
fmt:
    ruff format .
    ruff check --fix .

# The pages' browser dependency: hls.js, as pinned by package-lock.json (needs npm; without
# it the mosaic page falls back to the browser's own HLS and says so).
[group('develop')]
web:
    if command -v npm >/dev/null; then npm ci --no-audit --no-fund --loglevel=error; else echo "npm not found: skipping hls.js"; fi

# The whole test suite (what CI runs): check, then pytest against a real nats-server.
[group('develop')]
test *ARGS: check web
    python3 -m pytest {{ARGS}}

# --- run -------------------------------------------------------------------------------------

# Everything on this machine: embedded NATS, gateway, projector.
[group('run')]
up *ARGS:
    tessera up {{ARGS}}

# Print events as JSON lines.
[group('run')]
tail *ARGS:
    tessera events tail {{ARGS}}

# --- measure ---------------------------------------------------------------------------------

# Benchmarks (bench/); `just bench --quick` for the short run.
[group('measure')]
bench *ARGS:
    python3 bench/bench_urldsl.py {{ARGS}}
