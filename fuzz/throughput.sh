#!/usr/bin/env bash
# Compares a fuzz target's throughput between a base revision and the work
# tree (issue 15: "the fuzz target must keep its throughput, within 20 %").
#
#   fuzz/throughput.sh [BASE_REV] [SECONDS]
#
# BASE_REV defaults to 53cde98^1 (main just before issue 15's splitter work
# was merged; its reply.rs is the one of 133794f, the base before any of that
# work, in the workspace layout the fuzz targets of today build in).
# SECONDS (default 60) is the libFuzzer run per side.
#
# Two measurements of the same target source built from both trees:
#  1. instructions (valgrind --tool=callgrind, counting only inside the
#     target's body, rust_fuzzer_test_input) for a replay of one fixed set of
#     inputs, each run THROUGHPUT_RUNS times: the seeds of reply_splitter and
#     reply_known, the inputs fuzz/run.sh generates, a few larger ones made
#     here, and the reply corpus's bodies when it is there
#     ($LIAISON_REPLY_CORPUS, else ../shared/corpus/replies). Instruction
#     counts do not depend on the machine's load; this is the figure to
#     compare. Built without a sanitizer (valgrind cannot run ASan builds).
#  2. libFuzzer's exec/s for SECONDS per side from the same seeds, the same
#     -seed, dictionary and limits (built as fuzz/run.sh builds, AddressSanitizer
#     by default): noisy under load, reported as a second opinion.
#
# Environment:
#   THROUGHPUT_TARGET     fuzz target (default reply_splitter)
#   THROUGHPUT_RUNS       replays of each input under callgrind (default 3; the
#                         count is the same on every replay, so a few suffice)
#   THROUGHPUT_SANITIZER  sanitizer of the exec/s builds (default address)
#   THROUGHPUT_SEED       libFuzzer -seed (default 1)
#   FUZZ_BUILD_JOBS, FUZZ_NICE  as for fuzz/run.sh
#
# The base tree is exported with `git archive` into
# fuzz/target/throughput/base-tree (nothing is checked out in the work
# tree). Both sides build into fuzz/target/throughput/target, so the
# dependencies compile once per sanitizer. The binaries, the replay set,
# callgrind's files and the logs stay in fuzz/target/throughput/
# (git-ignored). Only targets that use nothing but liaison-core can be
# measured (reply_splitter, reply_known, tnef_decoder, command_parser).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
base_rev="${1:-53cde98^1}"
secs="${2:-60}"
target="${THROUGHPUT_TARGET:-reply_splitter}"
runs="${THROUGHPUT_RUNS:-3}"
sanitizer="${THROUGHPUT_SANITIZER:-address}"
seed="${THROUGHPUT_SEED:-1}"
nice_n="${FUZZ_NICE:-10}"
export CARGO_BUILD_JOBS="${FUZZ_BUILD_JOBS:-1}"
export RUSTC_BOOTSTRAP=1
unset CARGO_TARGET_DIR

case "$secs$runs" in
'' | *[!0-9]*)
    echo "usage: $0 [BASE_REV] [SECONDS]  (THROUGHPUT_RUNS a number)" >&2
    exit 2
    ;;
esac
command -v valgrind >/dev/null || {
    echo "valgrind is needed (apt-get install valgrind)" >&2
    exit 2
}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz from crates.io"
    cargo install --locked cargo-fuzz
fi

out="$here/target/throughput"
host="$(rustc -vV | sed -n 's/^host: //p')"
mkdir -p "$out"

echo "== exporting $base_rev ($(git -C "$repo" rev-parse --short "$base_rev")) to ${out#"$repo"/}/base-tree"
rm -rf "$out/base-tree"
mkdir -p "$out/base-tree"
git -C "$repo" archive "$base_rev" | tar -x -C "$out/base-tree"
if [ ! -f "$out/base-tree/fuzz/fuzz_targets/$target.rs" ]; then
    echo "$base_rev has no fuzz target $target" >&2
    exit 2
fi
if ! cmp -s "$out/base-tree/fuzz/fuzz_targets/$target.rs" "$here/fuzz_targets/$target.rs"; then
    echo "   note: the target's source differs between $base_rev and the work tree"
fi

# build TREE SANITIZER NAME: the target's source from TREE built by
# `cargo fuzz build` (as fuzz/run.sh builds it: release, debug assertions
# on, the same sanitizer and coverage flags) in a small crate of its own
# that depends on TREE's liaison-core only — the fuzz crate also depends
# on the whole shell (tokio, sled, axum …) for inbound_classifier, which
# the reply targets never call, and building that four times costs most of
# an hour on the 2-core machine. Cargo.lock is fuzz/Cargo.lock, so the
# versions are those the fuzz crate builds with. Copied to $out/NAME.
build() {
    local tree="$1" san="$2" name="$3" side="${3%%-*}"
    local crate="$out/crate-$side"
    mkdir -p "$crate"
    cat >"$crate/Cargo.toml" <<TOML
[package]
name = "liaison-fuzz-throughput-$side"
version = "0.0.0"
edition = "2021"
publish = false

[package.metadata]
cargo-fuzz = true

[dependencies]
libfuzzer-sys = "0.4"
liaison-core = { path = "$tree/core" }

[workspace]
members = ["."]

[profile.release]
debug = 1

[[bin]]
name = "$target"
path = "$tree/fuzz/fuzz_targets/$target.rs"
test = false
doc = false
bench = false
TOML
    cp "$here/Cargo.lock" "$crate/Cargo.lock"
    echo "== building $target from ${tree#"$repo"/} (sanitizer $san)"
    (cd "$crate" && nice -n "$nice_n" cargo fuzz build --fuzz-dir "$crate" --sanitizer "$san" \
        --target-dir "$out/target" "$target") >"$out/$name.build.log" 2>&1 || {
        tail -n 30 "$out/$name.build.log" >&2
        exit 1
    }
    cp "$out/target/$host/release/$target" "$out/$name"
}
# Each side's package has its own name, so that cargo keeps the two
# builds apart in the one target directory (a path package's hash does not
# depend on where its workspace lies).
build "$out/base-tree" none base-none
build "$repo" none head-none
build "$out/base-tree" "$sanitizer" "base-$sanitizer"
build "$repo" "$sanitizer" "head-$sanitizer"

# The seeds every side starts from (as fuzz/run.sh makes them).
seeds="$out/seeds"
rm -rf "$seeds"
mkdir -p "$seeds"
# Both targets' seed folders use the same file names: keep both.
for t in reply_splitter reply_known; do
    for f in "$here/seeds/$t"/*; do
        [ -f "$f" ] && cp "$f" "$seeds/${t}__$(basename "$f")"
    done
done
printf '> q\nx\n%.0s' $(seq 200) >"$seeds/gen_alternating"
printf 'From: a\nSent: b\nTo: c\n%.0s' $(seq 50) >"$seeds/gen_headers"

# The fixed replay set: the seeds, a few inputs at the fuzzer's size limit
# (8 KiB), and the corpus's bodies.
replay="$out/replay"
rm -rf "$replay"
mkdir -p "$replay"
cp "$seeds"/* "$replay"/
{
    for i in $(seq 40); do
        printf 'Accept, thanks (%s).\n\nOn Tue, 6 Jan 2026 at 10:00, Partner Desk <desk@example.net> wrote:\n> To accept, reply accept.\n> To decline, reply decline.\n\n' "$i"
    done
} | head -c 8192 >"$replay/gen_8k_attributions"
{
    for i in $(seq 60); do
        printf '보낸 사람: Partner Desk <desk@example.net>\n보낸 날짜: 2026년 1월 6일 화요일 오전 10:00\n받는 사람: Alice\n제목: 초대 %s\n\n' "$i"
    done
} | head -c 8192 >"$replay/gen_8k_korean_blocks"
printf 'a\n%.0s' $(seq 4096) >"$replay/gen_8k_short_lines"
head -c 8192 /dev/zero | tr '\0' 'x' >"$replay/gen_8k_one_line"
corpus="${LIAISON_REPLY_CORPUS:-$repo/../shared/corpus/replies}"
if [ -d "$corpus" ]; then
    for f in "$corpus"/*.txt "$corpus"/*.html "$corpus"/*.eml; do
        [ -f "$f" ] && cp "$f" "$replay/corpus__$(basename "$f")"
    done
    echo "== replay set: $(ls "$replay" | wc -l) inputs (with the corpus in ${corpus})"
else
    echo "== replay set: $(ls "$replay" | wc -l) inputs (no reply corpus found)"
fi

# Callgrind's instruction count inside the target body, for one side.
instructions() {
    local name="$1"
    valgrind --tool=callgrind --toggle-collect=rust_fuzzer_test_input \
        --callgrind-out-file="$out/$name.callgrind" \
        "$out/$name" -runs="$runs" "$replay"/* >"$out/$name.callgrind.log" 2>&1
    sed -n 's/^summary: *//p; s/^totals: *//p' "$out/$name.callgrind" | head -n 1 | awk '{print $1}'
}
echo "== callgrind: $runs replays of each input"
base_ir="$(instructions base-none)"
head_ir="$(instructions head-none)"

# libFuzzer's exec/s for one side, from a fresh copy of the seeds.
exec_rate() {
    local name="$1" dir="$out/corpus-$1"
    rm -rf "$dir"
    cp -r "$seeds" "$dir"
    nice -n "$nice_n" "$out/$name" "$dir" -seed="$seed" -max_total_time="$secs" \
        -max_len=8192 -dict="$here/dict/reply_splitter.dict" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 >"$out/$name.fuzz.log" 2>&1 || true
    local execs rate
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$name.fuzz.log" | tail -n 1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out/$name.fuzz.log" | tail -n 1)"
    echo "${execs:-0} ${rate:-0}"
}
echo "== libFuzzer: ${secs}s per side, -seed=$seed (load: $(cut -d' ' -f1-3 /proc/loadavg))"
read -r base_execs base_rate < <(exec_rate "base-$sanitizer")
read -r head_execs head_rate < <(exec_rate "head-$sanitizer")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }
echo "== $target: base $base_rev vs work tree"
printf '%-34s %16s %16s %8s\n' "" base head head/base
printf '%-34s %16s %16s %8s\n' "instructions (callgrind, replay)" "$base_ir" "$head_ir" "$(ratio "$head_ir" "$base_ir")"
printf '%-34s %16s %16s %8s\n' "libFuzzer exec/s ($sanitizer, ${secs}s)" "$base_rate" "$head_rate" "$(ratio "$head_rate" "$base_rate")"
printf '%-34s %16s %16s\n' "libFuzzer execs" "$base_execs" "$head_execs"
echo "(an instruction ratio above 1.20 is more than 20 % slower; callgrind files: ${out#"$repo"/}/*.callgrind)"
