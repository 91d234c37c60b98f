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

# hls.js for the pages, as pinned by package-lock.json (skipped without npm).
[group('develop')]
web:
    if command -v npm >/dev/null; then npm ci --no-audit --no-fund --loglevel=error; else echo "npm not found: skipping hls.js"; fi

# The whole test suite (what CI runs): check, then pytest against a real nats-server.
[group('develop')]
test *ARGS: check web
    python3 -m pytest {{ARGS}}

# --- run -------------------------------------------------------------------------------------

# Everything on this machine: embedded NATS, gateway, controller, workers.
[group('run')]
up *ARGS:
    tessera up {{ARGS}}

# Print events as JSON lines.
[group('run')]
tail *ARGS:
    tessera events tail {{ARGS}}

# --- measure ---------------------------------------------------------------------------------

# Benchmarks (bench/README.md): `--quick` < 3 min, full < 20 min; installs ffmpeg and wrk.
[group('measure')]
bench *ARGS:
    if ! command -v ffmpeg >/dev/null || ! command -v wrk >/dev/null; then apt-get update -qq && apt-get install -y -qq ffmpeg wrk >/dev/null; fi
    python3 bench/run.py {{ARGS}}
