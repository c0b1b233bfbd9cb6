#!/usr/bin/env bash
# Vellum's w1–w5 side by side with its peers, in one run on this machine
# (docs/benchmarks.md). Installs redis-server from the system's packages if missing.
# Usage: bench/peers.sh            full run: 3 runs at scale 1, writes docs/benchmarks.md
#        bench/peers.sh --smoke    a tiny run (CI), written to a temporary directory
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
fi

cargo build --release -p vellum-peers -p vellum-cli
if [[ "${1:-}" == "--smoke" ]]; then
  out="$(mktemp -d)/benchmarks.md"
  ./target/release/vellum-peers --runs 1 --scale 0.01 --skip-missing --out "$out"
  echo "smoke report: $out"
else
  ./target/release/vellum-peers --runs 3 --out docs/benchmarks.md
fi
