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

# The package serves its own copy of hls.js, so neither users nor the tests need npm; npm and the
# registry are needed only to bump it: `npm install --package-lock-only hls.js@X`, then this.
# Copy hls.js into gateway/vendor/hls.js/ from npm, as package-lock.json pins it.
[group('develop')]
vendor:
    #!/usr/bin/env python3
    import base64, hashlib, json, subprocess, tarfile, tempfile
    from pathlib import Path

    FILES = {"hls.min.js": "dist/hls.min.js", "LICENSE": "LICENSE"}  # name here: path in the tarball
    pin = json.loads(Path("package-lock.json").read_text())["packages"]["node_modules/hls.js"]
    out = Path("gateway/vendor/hls.js")
    with tempfile.TemporaryDirectory() as tmp:
        pack = ["npm", "pack", f"hls.js@{pin['version']}", "--json", "--pack-destination", tmp]
        packed = json.loads(subprocess.run(pack, check=True, stdout=subprocess.PIPE).stdout)[0]
        tarball = Path(tmp) / packed["filename"]
        digest = hashlib.sha512(tarball.read_bytes()).digest()
        got = "sha512-" + base64.b64encode(digest).decode()
        if got != pin["integrity"]:
            raise SystemExit(
                f"npm gave hls.js@{pin['version']} with integrity {got}, but package-lock.json "
                f"pins {pin['integrity']}: check the registry (npm config get registry)"
            )
        with tarfile.open(tarball) as tar:
            data = {n: tar.extractfile(f"package/{m}").read() for n, m in FILES.items()}
    out.mkdir(parents=True, exist_ok=True)
    for name, body in data.items():
        (out / name).write_bytes(body)
    manifest = {
        "package": "hls.js",
        "version": pin["version"],
        "integrity": pin["integrity"],
        "copied_by": "just vendor: the npm tarball of this version and integrity (package-lock.json)",
        "files": {
            name: {"from": FILES[name], "sha256": hashlib.sha256(body).hexdigest()}
            for name, body in data.items()
        },
    }
    (out / "vendored.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"hls.js {pin['version']} in {out}/ (integrity checked against package-lock.json)")

# The whole test suite (what CI runs): check, then pytest against a real nats-server.
[group('develop')]
test *ARGS: check
    python3 -m pytest {{ARGS}}

# (Marker `cluster`: three nats-servers, the control plane and agents here, killed in turn.)
# The several-machine tests, ~1.5 min, apart from the default suite's 15-minute budget.
[group('develop')]
test-cluster *ARGS:
    python3 -m pytest -m cluster {{ARGS}}

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

# Benchmarks (bench/README.md): `--quick` < 5 min, full < 20 min; installs ffmpeg, wrk and
# Chromium (case 9 plays the mosaic page in it).
[group('measure')]
bench *ARGS:
    if ! command -v ffmpeg >/dev/null || ! command -v wrk >/dev/null || [ ! -x /usr/bin/chromium ]; then apt-get update -qq && apt-get install -y -qq ffmpeg wrk chromium fonts-dejavu-core >/dev/null; fi
    python3 bench/run.py {{ARGS}}
