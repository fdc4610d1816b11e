#!/usr/bin/env bash
# Runs Liaison's cargo-fuzz targets for a set time each.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# SECONDS defaults to 60 per target; TARGETs default to all of them.
# Not part of `cargo test` or .ci/run: the fuzz crate is its own workspace.
#
# Works with the stable toolchain: cargo-fuzz passes `-Z` flags to rustc
# (sanitizer, sancov), which stable accepts with RUSTC_BOOTSTRAP=1.
#
# Environment:
#   FUZZ_SANITIZER   address (default) or none (faster, catches only panics)
#   FUZZ_BUILD_JOBS  parallel rustc jobs for the build (default 1)
#   FUZZ_NICE        niceness of the build and the fuzzer (default 10)
#
# Writes the corpus to fuzz/corpus/<target>/, crashes to
# fuzz/artifacts/<target>/ and logs to fuzz/target/fuzz-logs/<target>.log
# (all ignored by git). Exits non-zero when a target found a crash.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

secs="${1:-60}"
shift || true
case "$secs" in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS] [TARGET...]" >&2
    exit 2
    ;;
esac
all_targets=(command_parser inbound_classifier reply_splitter reply_known tnef_decoder)
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=("${all_targets[@]}"); fi

sanitizer="${FUZZ_SANITIZER:-address}"
nice_n="${FUZZ_NICE:-10}"
export CARGO_BUILD_JOBS="${FUZZ_BUILD_JOBS:-1}"
export RUSTC_BOOTSTRAP=1
# The fuzz crate's build stays in fuzz/target, away from the main build.
unset CARGO_TARGET_DIR
target_dir="$here/target"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz from crates.io"
    cargo install --locked cargo-fuzz
fi

# Per-target libFuzzer settings.
max_len() {
    case "$1" in
    inbound_classifier) echo 16384 ;;
    *) echo 8192 ;;
    esac
}

# Seeds: the small handwritten ones in seeds/<target>/, plus a few larger
# synthetic ones made here (limits, long lines, many lines).
seed_corpus() {
    local t="$1" dir="corpus/$1"
    mkdir -p "$dir" "artifacts/$t"
    cp -n seeds/"$t"/* "$dir"/ 2>/dev/null || true
    case "$t" in
    command_parser)
        printf 'list\n%.0s' $(seq 60) >"$dir/gen_many_commands"
        { printf 'invite '; printf 'a%.0s' $(seq 1100); printf '@x.test\n'; } >"$dir/gen_long_line"
        printf 'frobnicate\nfoo\nbar\nbaz\ninvite a@b.test\n' >"$dir/gen_unknown"
        ;;
    reply_splitter)
        printf '> q\nx\n%.0s' $(seq 200) >"$dir/gen_alternating"
        printf 'From: a\nSent: b\nTo: c\n%.0s' $(seq 50) >"$dir/gen_headers"
        ;;
    inbound_classifier)
        {
            printf 'From: Partner1@liaison.test\r\nTo: commands@liaison.test\r\nSubject: many\r\n\r\n'
            for i in $(seq 55); do printf 'invite c%s@contoso.test\r\n' "$i"; done
        } >"$dir/gen_many_invites"
        printf 'From: Alice <alice@contoso.test>\r\nTo: invites@liaison.test\r\nSubject: Re: x\r\nIn-Reply-To: <liaison.seed@liaison.test>\r\n\r\n%s\r\n' \
            "decline" >"$dir/gen_decline"
        printf 'From: Alice <alice@contoso.test>\r\nTo: invites@liaison.test\r\nSubject: Re: x\r\nReferences: <x@y> <liaison.seed@liaison.test>\r\n\r\n%s\r\n' \
            "We have removed your admin permissions." >"$dir/gen_removed"
        ;;
    esac
}

echo "== building fuzz targets (sanitizer: $sanitizer, jobs: $CARGO_BUILD_JOBS)"
nice -n "$nice_n" cargo fuzz build --sanitizer "$sanitizer" --target-dir "$target_dir"

mkdir -p "$target_dir/fuzz-logs"
failed=()
summary=()
for t in "${targets[@]}"; do
    seed_corpus "$t"
    log="$target_dir/fuzz-logs/$t.log"
    echo "== $t for ${secs}s (log: ${log#"$here"/})"
    status=0
    nice -n "$nice_n" cargo fuzz run --sanitizer "$sanitizer" --target-dir "$target_dir" \
        "$t" "corpus/$t" -- \
        -max_total_time="$secs" \
        -max_len="$(max_len "$t")" \
        -dict="dict/$t.dict" \
        -timeout=10 \
        -rss_limit_mb=2048 \
        -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)"
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
    line="$t: status $status, execs ${execs:-?}, exec/s ${rate:-?}; ${done_line:-no DONE line}"
    summary+=("$line")
    echo "   $line"
    if [ "$status" -ne 0 ]; then
        failed+=("$t")
        echo "   !! $t failed; last lines of its log:"
        tail -n 40 "$log" | sed 's/^/   | /'
        ls -1 "artifacts/$t" 2>/dev/null | sed 's/^/   artifact: /'
    fi
done

echo "== summary"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED: ${failed[*]} (reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET artifacts/TARGET/FILE)"
    exit 1
fi
