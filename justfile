# Emporium's developer commands. `just` lists them.
#
# Server URLs come from the environment (or a `.env` file), defaulting to the
# local dev stack; see .env.example for every variable.

set dotenv-load := true
set shell := ["bash", "-euo", "pipefail", "-c"]

export DATABASE_URL := env("DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/postgres")
export REDIS_URL := env("REDIS_URL", "redis://127.0.0.1:6379")
export NATS_URL := env("NATS_URL", "nats://127.0.0.1:4222")
export GATEWAY_ADDR := env("GATEWAY_ADDR", "127.0.0.1:8080")

target_dir := env("CARGO_TARGET_DIR", justfile_directory() / "target")
emporium := target_dir / "debug" / "emporium"
run_dir := justfile_directory() / ".run"

# List the recipes.
default:
    @just --list

# Start the whole stack (servers, provisioning, every service) and wait until it is ready.
up: servers build provision-only
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p "{{run_dir}}"
    if [[ -f "{{run_dir}}/emporium.pid" ]] && kill -0 "$(cat "{{run_dir}}/emporium.pid")" 2>/dev/null; then
        echo "[up] restarting the running stack"
        just down-services
    fi
    nohup "{{emporium}}" run all >"{{run_dir}}/emporium.log" 2>&1 &
    echo $! >"{{run_dir}}/emporium.pid"
    url="http://{{GATEWAY_ADDR}}"
    for _ in $(seq 1 120); do
        if curl -fsS "$url/readyz" >/dev/null 2>&1; then
            echo "Emporium is up: $url   (logs: .run/emporium.log, stop: just down)"
            exit 0
        fi
        kill -0 "$(cat "{{run_dir}}/emporium.pid")" 2>/dev/null || break
        sleep 0.5
    done
    echo "[up] the stack did not become ready; last log lines:" >&2
    tail -n 30 "{{run_dir}}/emporium.log" >&2
    exit 1

# Stop the services and whatever servers `just up` started.
down: down-services
    scripts/stack.sh stop-started

# Stop the services only (SIGTERM: they drain in-flight work first).
down-services:
    #!/usr/bin/env bash
    set -euo pipefail
    pidfile="{{run_dir}}/emporium.pid"
    [[ -f $pidfile ]] || { echo "[down] no services running"; exit 0; }
    pid=$(cat "$pidfile")
    if kill -TERM "$pid" 2>/dev/null; then
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && { echo "[down] still draining after 30 s; killing"; kill -KILL "$pid"; }
    fi
    rm -f "$pidfile"
    echo "[down] services stopped"

# Make sure Postgres, Redis and NATS (JetStream) are running; install them if absent.
servers:
    scripts/stack.sh ensure

# Build the emporium binary.
build:
    cargo build -p emporium

# Create databases, streams, buckets and consumers (idempotent).
provision: servers build provision-only

[private]
provision-only:
    "{{emporium}}" provision

# Run every test against the real servers.
test: servers
    #!/usr/bin/env bash
    set -euo pipefail
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --workspace --no-fail-fast
    else
        cargo test --workspace --no-fail-fast
    fi

# Benchmarks (release build); each figure is printed as `bench: <name> = <value> <unit>`.
bench: servers
    cargo build --release --quiet -p emporium -p emporium-load
    # Checkouts against the real stack: the emporium binary on private servers, driven over HTTP.
    "{{target_dir}}/release/loadgen" --emporium "{{target_dir}}/release/emporium"
    # In-process benchmarks of single paths (front door, catalog reads and searches).
    cargo bench --workspace --quiet 2>/dev/null | grep '^bench:' || { echo "benchmarks failed" >&2; exit 1; }

# Fault scenarios under load, one at a time, each on private servers with one process per service
# (tests/load/tests/chaos.rs): kill -9 of each service, NATS stopped 10 s, Postgres restarted,
# duplicated events, outbox replay; each ends with the whole-system invariants checked.
chaos: servers
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build -p emporium
    export EMPORIUM_BIN="{{emporium}}"
    started=$SECONDS
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run -p emporium-load --test chaos --run-ignored only --no-capture --no-fail-fast
    else
        cargo test -p emporium-load --test chaos -- --ignored --test-threads=1 --nocapture
    fi
    echo "chaos: every scenario passed in $((SECONDS - started)) s"

# Fuzz the HTTP API from /openapi.json with schemathesis (scripts/fuzz-api.sh); fails on any 5xx or undocumented answer.
fuzz-api:
    scripts/fuzz-api.sh

# Format the code.
fmt:
    cargo fmt --all

# Fail if the code is not formatted.
fmt-check:
    cargo fmt --all -- --check

# Clippy on everything, warnings denied.
lint:
    cargo clippy --workspace --all-targets -- -D warnings

# Licences, bans and sources of dependencies (cargo-deny; advisories need the network).
deny:
    cargo deny check bans licenses sources

# Print the live events of one order (or any entity key) as they are published.
watch key: build
    "{{emporium}}" watch "{{key}}"
