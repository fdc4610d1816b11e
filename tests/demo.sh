#!/usr/bin/env bash
# tests/demo.sh — Liaison's main job, end to end, on this machine.
#
# Brings the loopback mail stack up if needed (tests/mailstack.sh), builds
# and starts the daemon with config/liaison.dev.toml, then plays the story
# with ordinary mail tools (swaks to send, curl to read over IMAP):
#   1. partner1@liaison.test (Northwind Traders) mails `invite alice@contoso.test`
#      to commands@liaison.test;
#   2. alice@contoso.test receives the invitation and replies "Accept";
#   3. the partner is told, Alice gets a confirmation, the relationship is active.
# Each mail's subject is printed as it arrives, then the final state. The
# demo starts from an empty dev store and empty demo mailboxes each time.
# Needs root (it installs Debian packages on first use).
set -euo pipefail
cd "$(dirname "$0")/.."

PASS=liaison-dev
IMAP=imap://127.0.0.1:1143
CONFIG=config/liaison.dev.toml
STATE=.liaison
USERS=(commands@liaison.test invites@liaison.test partner1@liaison.test alice@contoso.test)

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

bash tests/mailstack.sh up
if ! command -v curl >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q curl >/dev/null
fi

say "Building liaison"
cargo build --quiet --bin liaison
BIN="${CARGO_TARGET_DIR:-target}/debug/liaison"

imap() { # user, path suffix, [curl args…]
    local user=$1 path=$2; shift 2
    curl -s --max-time 10 --user "$user:$PASS" "$IMAP/INBOX$path" "$@"
}
uids() { imap "$1" "" -X 'UID SEARCH ALL' | tr -d '\r' | sed -n 's/^\* SEARCH//p' | tr -s ' ' '\n' | sed '/^$/d'; }
header() { # user uid field: the unfolded header value
    imap "$1" "/;UID=$2/;SECTION=HEADER" | tr -d '\r' |
        awk -v f="$3" 'BEGIN{IGNORECASE=1} /^[^ \t]/{p=(tolower($0) ~ "^" tolower(f) ":")} p{sub(/^[ \t]+/," "); printf "%s", $0} END{print ""}' |
        sed -E "s/^[^:]*: ?//"
}
wait_count() { # user count: waits until the INBOX holds at least count mails
    for _ in $(seq 1 200); do
        [ "$(uids "$1" | wc -l)" -ge "$2" ] && return 0
        sleep 0.1
    done
    die "$1 did not receive $2 mail(s) in 20 s; see $STATE/demo.log"
}
show() { # user: print every subject in the INBOX
    for u in $(uids "$1"); do printf '  %-24s %s\n' "$1" "$(header "$1" "$u" Subject)"; done
}

# A fresh start: stop a previous demo daemon, empty its store and mailboxes.
mkdir -p "$STATE"
if [ -f "$STATE/demo.pid" ] && kill -0 "$(cat "$STATE/demo.pid")" 2>/dev/null; then
    kill -TERM "$(cat "$STATE/demo.pid")"; sleep 1
fi
rm -rf "$STATE/dev-store" "$STATE/dev-store.sock"
for u in "${USERS[@]}"; do
    imap "$u" "" -X 'STORE 1:* +FLAGS.SILENT (\Deleted)' >/dev/null 2>&1 || true
    imap "$u" "" -X 'EXPUNGE' >/dev/null 2>&1 || true
done

say "Starting the daemon (log: $STATE/demo.log)"
"$BIN" --config "$CONFIG" run >"$STATE/demo.log" 2>&1 &
DAEMON=$!
echo "$DAEMON" >"$STATE/demo.pid"
trap 'kill -TERM $DAEMON 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -S "$STATE/dev-store.sock" ] && break; sleep 0.1; done
[ -S "$STATE/dev-store.sock" ] || die "daemon did not start; see $STATE/demo.log"

say "1. Northwind's partner1@liaison.test mails a command to commands@liaison.test"
swaks --silent 2 --server 127.0.0.1:2525 \
    --from partner1@liaison.test --to commands@liaison.test \
    --header 'Subject: New customer' \
    --body 'invite alice@contoso.test name "Contoso Ltd"'
echo '  > invite alice@contoso.test name "Contoso Ltd"'

wait_count alice@contoso.test 1
UID1=$(uids alice@contoso.test | sed -n 1p)
SUBJECT=$(header alice@contoso.test "$UID1" Subject)
REPLY_TO=$(header alice@contoso.test "$UID1" Reply-To | sed -E 's/.*<([^>]+)>.*/\1/')
MSGID=$(header alice@contoso.test "$UID1" Message-ID)
say "2. Alice received the invitation"
printf '  Subject:  %s\n  Reply-To: %s\n' "$SUBJECT" "$REPLY_TO"
wait_count partner1@liaison.test 1
say "   Northwind received its acknowledgement"
show partner1@liaison.test

say "3. Alice replies \"Accept\" from her mail client (the invitation quoted below)"
swaks --silent 2 --server 127.0.0.1:2525 \
    --from alice@contoso.test --to "$REPLY_TO" \
    --header "Subject: Re: $SUBJECT" --header "In-Reply-To: $MSGID" --header "References: $MSGID" \
    --body "$(printf 'Accept\n\nOn Wed, 25 Nov 2026 at 10:00, Liaison <invites@liaison.test> wrote:\n> Hello Contoso Ltd,\n> To accept, reply with "accept". To decline, reply with "decline".\n')"

wait_count partner1@liaison.test 2
wait_count alice@contoso.test 2
say "4. Every mail in the story"
show partner1@liaison.test
show alice@contoso.test

say "5. Final state (liaison status, asked of the running daemon)"
"$BIN" --config "$CONFIG" status alice@contoso.test
"$BIN" --config "$CONFIG" status alice@contoso.test --json

say "6. Stopping the daemon (SIGTERM)"
kill -TERM "$DAEMON"
trap - EXIT
if wait "$DAEMON"; then echo "  daemon stopped cleanly (exit 0)"; else die "daemon exited with $?"; fi
rm -f "$STATE/demo.pid"
