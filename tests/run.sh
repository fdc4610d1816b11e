#!/usr/bin/env bash
# tests/run.sh — the whole test suite: brings the loopback mail stack and a
# private PostgreSQL (tests/postgres.sh) up, installing Postfix, Dovecot and
# PostgreSQL on first use, then runs every unit, corpus and end-to-end test.
# Benchmarks are not part of it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/mailstack.sh up
# A private PostgreSQL (installed on first use) for the postgres store backend.
bash tests/postgres.sh up
# Chromium and chromedriver for the landing page's browser tests.
bash tests/browser.sh install
cargo test --locked "$@"
# The end-to-end suites (tests/e2e*.rs) once more on the PostgreSQL store:
# tests/common gives each daemon a fresh database of the private PostgreSQL
# (tests/postgres.sh) instead of a sled folder. Suites that choose their
# backend themselves ran in the pass above and are not run twice:
# e2e_failover (always PostgreSQL); cli_postgres.rs (not an e2e_ file)
# uses both.
OWN_BACKEND=(e2e_failover)
suites=()
for file in tests/e2e*.rs; do
  name=$(basename "$file" .rs)
  [[ " ${OWN_BACKEND[*]} " == *" $name "* ]] || suites+=(--test "$name")
done
LIAISON_TEST_BACKEND=postgres cargo test --locked "${suites[@]}" "$@"
