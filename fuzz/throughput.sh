#!/usr/bin/env bash
# Compares a fuzz target's throughput between a base revision and the work
# tree (issue 15: "the fuzz target must keep its throughput, within 20 %").
#
#   fuzz/throughput.sh [BASE_REV] [SECONDS]
#
# BASE_REV defaults to 53cde98^1 (main just before issue 15's splitter work
# was merged; its reply.rs is the one of 133794f, the base before any of that
# work, in the workspace layout the fuzz targets of today build in).
# SECONDS (default 60) is the libFuzzer run per side; 0 skips that
# measurement (and its sanitizer builds).
#
# Two measurements of the same target source built from both trees:
#  1. instructions (valgrind --tool=callgrind, counting only inside the
#     target's body, rust_fuzzer_test_input) for replays of fixed input
#     groups, printed per group:
#       seeds      the seeds of reply_splitter and reply_known and the two
#                  inputs fuzz/run.sh generates, THROUGHPUT_RUNS times each;
#       gen_8k_*   four inputs at the fuzzer's size limit made here (each
#                  on its own line), THROUGHPUT_RUNS times each;
#       corpus     the reply corpus's bodies when it is there
#                  ($LIAISON_REPLY_CORPUS, else ../shared/corpus/replies),
#                  THROUGHPUT_RUNS times each;
#       fuzzer     inputs the fuzzer generated, once each: the union of the
#                  corpora that libFuzzer grows from the seeds with both
#                  binaries (no sanitizer, -seed, THROUGHPUT_FUZZ_RUNS
#                  executions each). The target hashes with a random key,
#                  so each run grows somewhat different corpora; the
#                  group is kept in fuzz/target/throughput/fuzzer-inputs;
#       fuzzer_kept  the inputs in THROUGHPUT_FUZZ_INPUTS, once each, when
#                  that names a folder (e.g. the fuzzer-inputs of an
#                  earlier run, copied away: the same inputs for several
#                  heads).
#     Instruction counts do not depend on the machine's load; this is the
#     figure to compare. Built without a sanitizer (valgrind cannot run
#     ASan builds).
#  2. libFuzzer's exec/s for SECONDS per side from the same seeds, the same
#     -seed, dictionary and limits (built as fuzz/run.sh builds, AddressSanitizer
#     by default): noisy under load, reported as a second opinion.
#
# Environment:
#   THROUGHPUT_HEAD       a revision to measure instead of the work tree
#                         (exported like the base), e.g. to measure a
#                         commit before a change with the same script
#   THROUGHPUT_TARGET     fuzz target (default reply_splitter)
#   THROUGHPUT_RUNS       replays of each fixed input under callgrind
#                         (default 3; the count is the same on every replay,
#                         so a few suffice)
#   THROUGHPUT_FUZZ_RUNS  executions per side that grow the fuzzer group
#                         (default 50000)
#   THROUGHPUT_FUZZ_INPUTS  a folder of inputs replayed as the group
#                         fuzzer_kept
#   THROUGHPUT_SANITIZER  sanitizer of the exec/s builds (default address)
#   THROUGHPUT_SEED       libFuzzer -seed (default 1)
#   FUZZ_BUILD_JOBS, FUZZ_NICE  as for fuzz/run.sh
#
# The base tree (and THROUGHPUT_HEAD's) is exported with `git archive`
# into fuzz/target/throughput/ (nothing is checked out in the work
# tree). Both sides build into fuzz/target/throughput/target, so the
# dependencies compile once per sanitizer. The binaries, the replay set,
# callgrind's files and the logs stay in fuzz/target/throughput/
# (git-ignored). Only targets that use nothing but liaison-core can be
# measured (reply_splitter, reply_known, tnef_decoder, command_parser).
# An instruction ratio (head/base) above 1.20 on any group is more than
# 20 % slower.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
base_rev="${1:-53cde98^1}"
secs="${2:-60}"
target="${THROUGHPUT_TARGET:-reply_splitter}"
runs="${THROUGHPUT_RUNS:-3}"
fuzz_runs="${THROUGHPUT_FUZZ_RUNS:-50000}"
fuzz_inputs="${THROUGHPUT_FUZZ_INPUTS:-}"
head_rev="${THROUGHPUT_HEAD:-}"
sanitizer="${THROUGHPUT_SANITIZER:-address}"
seed="${THROUGHPUT_SEED:-1}"
nice_n="${FUZZ_NICE:-10}"
export CARGO_BUILD_JOBS="${FUZZ_BUILD_JOBS:-1}"
export RUSTC_BOOTSTRAP=1
unset CARGO_TARGET_DIR

case "$secs$runs$fuzz_runs" in
'' | *[!0-9]*)
    echo "usage: $0 [BASE_REV] [SECONDS]  (THROUGHPUT_RUNS, THROUGHPUT_FUZZ_RUNS numbers)" >&2
    exit 2
    ;;
esac
command -v valgrind >/dev/null || {
    echo "valgrind is needed (apt-get install valgrind)" >&2
    exit 2
}
if [ -n "$fuzz_inputs" ] && [ ! -d "$fuzz_inputs" ]; then
    echo "THROUGHPUT_FUZZ_INPUTS=$fuzz_inputs is no folder" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz from crates.io"
    cargo install --locked cargo-fuzz
fi

out="$here/target/throughput"
host="$(rustc -vV | sed -n 's/^host: //p')"
mkdir -p "$out"

# export REV DIR: REV's tree in DIR. A tree exported before from the same
# commit is kept as it is: new files' times would make cargo build it
# again.
export_rev() {
    local rev="$1" dir="$2" commit
    commit="$(git -C "$repo" rev-parse --verify "$rev^{commit}")"
    if [ "$(cat "$dir.commit" 2>/dev/null)" = "$commit" ] && [ -d "$dir" ]; then
        echo "== $rev (${commit:0:7}) is in ${dir#"$repo"/} already"
    else
        echo "== exporting $rev (${commit:0:7}) to ${dir#"$repo"/}"
        rm -rf "$dir" "$dir.commit"
        mkdir -p "$dir"
        git -C "$repo" archive "$commit" | tar -x -C "$dir"
        echo "$commit" >"$dir.commit"
    fi
    if [ ! -f "$dir/fuzz/fuzz_targets/$target.rs" ]; then
        echo "$rev has no fuzz target $target" >&2
        exit 2
    fi
}
export_rev "$base_rev" "$out/base-tree"
head_tree="$repo"
head_name="work tree"
if [ -n "$head_rev" ]; then
    head_tree="$out/head-tree"
    head_name="$head_rev"
    export_rev "$head_rev" "$head_tree"
fi
if ! cmp -s "$out/base-tree/fuzz/fuzz_targets/$target.rs" "$head_tree/fuzz/fuzz_targets/$target.rs"; then
    echo "   note: the target's source differs between $base_rev and the $head_name"
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
    [ "$tree" = "$repo" ] && echo "   (the work tree, as it is now: leave it alone until the build is done)"
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
build "$head_tree" none head-none

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

# The replay groups, one folder each.
replay="$out/replay"
rm -rf "$replay"
mkdir -p "$replay/seeds" "$replay/corpus"
cp "$seeds"/* "$replay/seeds"/
# Inputs at the fuzzer's size limit (8 KiB), one group each. The whole
# text is read before it is cut: `printf … | head -c` would stop the
# writer with SIGPIPE, and pipefail the script.
gen() {
    mkdir -p "$replay/$1"
    cat >"$replay/$1/$1.full"
    head -c 8192 "$replay/$1/$1.full" >"$replay/$1/$1"
    rm "$replay/$1/$1.full"
}
for i in $(seq 40); do
    printf 'Accept, thanks (%s).\n\nOn Tue, 6 Jan 2026 at 10:00, Partner Desk <desk@example.net> wrote:\n> To accept, reply accept.\n> To decline, reply decline.\n\n' "$i"
done | gen gen_8k_attributions
for i in $(seq 60); do
    printf '보낸 사람: Partner Desk <desk@example.net>\n보낸 날짜: 2026년 1월 6일 화요일 오전 10:00\n받는 사람: Alice\n제목: 초대 %s\n\n' "$i"
done | gen gen_8k_korean_blocks
printf 'a\n%.0s' $(seq 4096) | gen gen_8k_short_lines
head -c 8192 /dev/zero | tr '\0' 'x' | gen gen_8k_one_line
corpus="${LIAISON_REPLY_CORPUS:-$repo/../shared/corpus/replies}"
if [ -d "$corpus" ]; then
    for f in "$corpus"/*.txt "$corpus"/*.html "$corpus"/*.eml; do
        [ -f "$f" ] && cp "$f" "$replay/corpus/$(basename "$f")"
    done
else
    echo "   note: no reply corpus in $corpus (LIAISON_REPLY_CORPUS): no corpus group"
    rmdir "$replay/corpus"
fi

# Inputs a fuzzer grew before (THROUGHPUT_FUZZ_INPUTS), as a group of
# their own: the same inputs for several heads.
if [ -n "$fuzz_inputs" ]; then
    mkdir -p "$replay/fuzzer_kept"
    find "$fuzz_inputs" -maxdepth 1 -type f -exec cp {} "$replay/fuzzer_kept"/ \;
fi
# The fuzzer group: what libFuzzer makes of the seeds with either binary.
mkdir -p "$replay/fuzzer"
echo "== fuzzer group: $fuzz_runs executions per side from the seeds, -seed=$seed, no sanitizer"
for name in base-none head-none; do
    dir="$out/grown-$name"
    rm -rf "$dir"
    cp -r "$seeds" "$dir"
    nice -n "$nice_n" "$out/$name" "$dir" -seed="$seed" -runs="$fuzz_runs" \
        -max_len=8192 -dict="$here/dict/reply_splitter.dict" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 >"$out/$name.grow.log" 2>&1 || {
        tail -n 20 "$out/$name.grow.log" >&2
        exit 1
    }
    # libFuzzer names its inputs by their SHA-1: the same input from both
    # sides is kept once.
    cp "$dir"/* "$replay/fuzzer"/
done
# The target hashes with a random key (HashSet), so coverage and thus the
# grown corpora differ from run to run: keep this group for the next run.
rm -rf "$out/fuzzer-inputs"
cp -r "$replay/fuzzer" "$out/fuzzer-inputs"
groups=()
for g in "$replay"/*; do
    groups+=("$(basename "$g")")
done
for g in "${groups[@]}"; do
    echo "   replay group $g: $(find "$replay/$g" -type f | wc -l) inputs"
done

# Callgrind's instruction count inside the target body, for one side and
# one group.
instructions() {
    local name="$1" group="$2" n="$runs"
    case "$group" in fuzzer*) n=1 ;; esac
    valgrind --tool=callgrind --toggle-collect=rust_fuzzer_test_input \
        --callgrind-out-file="$out/$name.$group.callgrind" \
        "$out/$name" -runs="$n" "$replay/$group"/* >"$out/$name.$group.callgrind.log" 2>&1 || {
        tail -n 20 "$out/$name.$group.callgrind.log" >&2
        exit 1
    }
    sed -n 's/^summary: *//p; s/^totals: *//p' "$out/$name.$group.callgrind" | head -n 1 | awk '{print $1}'
}
echo "== callgrind: $runs replays of each fixed input, 1 of each fuzzer input"
declare -A base_ir head_ir
for g in "${groups[@]}"; do
    base_ir[$g]="$(instructions base-none "$g")"
    head_ir[$g]="$(instructions head-none "$g")"
done

# The instruction figures first: the sanitizer builds below take long.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }
echo "== $target: base $base_rev vs $head_name"
printf '%-34s %16s %16s %9s\n' "instructions (callgrind)" base head head/base
base_total=0
head_total=0
for g in "${groups[@]}"; do
    printf '%-34s %16s %16s %9s\n' "  $g ($(find "$replay/$g" -type f | wc -l))" "${base_ir[$g]}" "${head_ir[$g]}" \
        "$(ratio "${head_ir[$g]}" "${base_ir[$g]}")"
    base_total=$((base_total + base_ir[$g]))
    head_total=$((head_total + head_ir[$g]))
done
printf '%-34s %16s %16s %9s\n' "  all groups" "$base_total" "$head_total" "$(ratio "$head_total" "$base_total")"
echo "(an instruction ratio above 1.20 on a group is more than 20 % slower; callgrind files: ${out#"$repo"/}/*.callgrind)"

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
if [ "$secs" -gt 0 ]; then
    build "$out/base-tree" "$sanitizer" "base-$sanitizer"
    build "$head_tree" "$sanitizer" "head-$sanitizer"
    echo "== libFuzzer: ${secs}s per side, -seed=$seed (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    read -r base_execs base_rate < <(exec_rate "base-$sanitizer")
    read -r head_execs head_rate < <(exec_rate "head-$sanitizer")
fi

if [ "$secs" -gt 0 ]; then
    printf '%-34s %16s %16s %9s\n' "libFuzzer exec/s ($sanitizer, ${secs}s)" base head head/base
    printf '%-34s %16s %16s %9s\n' "  exec/s" "$base_rate" "$head_rate" "$(ratio "$head_rate" "$base_rate")"
    printf '%-34s %16s %16s\n' "  execs" "$base_execs" "$head_execs"
fi
