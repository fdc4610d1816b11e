#!/usr/bin/env bash
# tests/postgres.sh — private, loopback-only PostgreSQL for Liaison's tests.
#
# Installs Debian's PostgreSQL (when no /usr/lib/postgresql/*/bin/initdb is
# there) and runs a private instance of it: its own data directory (initdb
# in the state folder), its own Unix socket directory, a non-standard port,
# started and stopped by pid. The system's cluster (/var/lib/postgresql,
# port 5432) is never started, stopped or changed.
#
#   TCP    127.0.0.1:55432   only loopback; login role "liaison", password
#                            "liaison-dev" (scram-sha-256), CREATEDB, so each
#                            test creates a database of its own. TLS offered
#                            (ssl = on, certificate for CN=localhost, SAN
#                            IP:127.0.0.1 and DNS:localhost, signed by the
#                            private CA tls/ca.pem), plaintext allowed too:
#                            sslmode=disable|prefer|require|verify-full work.
#   socket $DIR/sock         superuser "postgres", trust; only root and the
#                            server's user may enter the folder
#
# PostgreSQL refuses to run as root: run as root (as CI does), this script
# runs the server as the system user PG_USER below (created if missing).
# Run as any other user, it runs the server as that user (installing
# PostgreSQL still needs root).
#
# Usage: tests/postgres.sh install|up|down|status|env
#   install  apt-get install PostgreSQL (quick no-op when an initdb exists),
#            create the server's user
#   up       install, initdb on first use, write the configuration, start the
#            server, wait until it accepts connections (pg_isready), create
#            the role. On a running instance: a no-op (a changed
#            configuration is reloaded; a setting that needs a restart
#            restarts it)
#   down     stop the instance this script started (by pid; fast shutdown:
#            open connections are closed). `down --immediate` stops it like a
#            crash (SIGQUIT: no checkpoint; the next start recovers from WAL)
#   status   report the instance; exit non-zero unless it runs
#   env      print shell exports for clients, e.g. eval "$(tests/postgres.sh env)":
#            LIAISON_PG_URL   postgres://liaison:liaison-dev@127.0.0.1:PORT/postgres
#                             (the base URL; a test replaces the database name)
#            LIAISON_PG_HOST  127.0.0.1
#            LIAISON_PG_PORT  PORT
#            LIAISON_PG_CA    $DIR/tls/ca.pem (trust it for sslmode=verify-full)
# Data survives down/up; to start from nothing, run down and remove the
# state folder.
#
# A private instance beside the shared one (for work on this script, or a
# second worker): LIAISON_PG_PORT_OFFSET=N moves the port to 55432+N, and it
# needs its own LIAISON_PG_DIR. The tests (tests/common/pg.rs) read the same
# two variables.
#
# State folder: ${LIAISON_PG_DIR:-/tmp/liaison-pg} (keep it short: Unix
# socket paths are limited to 107 bytes). Layout:
#   data/               the cluster (PGDATA): postgresql.conf includes
#                       liaison.conf (written by this script), pg_hba.conf
#                       (written by this script), postmaster.pid
#   sock/               Unix socket (.s.PGSQL.PORT)
#   tls/                ca.pem (test CA to trust), cert.pem + key.pem (server)
#   log/postgres.log    the server's log;  log/start.log  pg_ctl's output
# Concurrent runs of this script for the same state folder wait for each
# other (flock on $DIR.lock).
set -euo pipefail

# ---------------------------------------------------------------- settings ---
BIND=127.0.0.1
PORT_OFFSET=${LIAISON_PG_PORT_OFFSET:-0}
[[ $PORT_OFFSET =~ ^[0-9]+$ ]] || { echo "postgres: error: LIAISON_PG_PORT_OFFSET must be a number" >&2; exit 2; }
PORT=$((55432 + PORT_OFFSET))
ROLE=liaison
PASSWORD=liaison-dev
SUPERUSER=postgres            # bootstrap superuser: Unix socket only, no password
PG_USER=liaisonpg             # runs the server when this script runs as root
# Many test databases and two daemons (each with its pool) at once.
MAX_CONNECTIONS=300
WAIT_SECONDS=60
PACKAGES=(postgresql openssl)

PG_DIR="${LIAISON_PG_DIR:-/tmp/liaison-pg}"
# One spelling, so that server_pid recognises the command line of a server
# started by another run of this script.
while [[ $PG_DIR == */ && $PG_DIR != / ]]; do PG_DIR=${PG_DIR%/}; done
DATA_DIR="$PG_DIR/data"
SOCK_DIR="$PG_DIR/sock"
TLS_DIR="$PG_DIR/tls"
LOG_DIR="$PG_DIR/log"
LOCK_FILE="$PG_DIR.lock"

log() { printf 'postgres: %s\n' "$*" >&2; }
die() { printf 'postgres: error: %s\n' "$*" >&2; exit 1; }

is_root() { [[ $(id -u) -eq 0 ]]; }
# The user the server runs as.
server_user() { if is_root; then printf '%s\n' "$PG_USER"; else id -un; fi; }

# as_server CMD...: runs CMD as the server's user, from / (its user may not
# enter the caller's working directory), with no descriptor above 2 open.
# The server outlives this script: one started under `flock …` (this
# script's own lock, or a test's) would otherwise inherit the lock's
# descriptor and hold it for as long as it runs. setsid: the server leaves
# the caller's session, so a Ctrl-C in a test run does not stop it.
as_server() {
  (
    cd /
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      [[ $fd -gt 2 && $fd != 255 ]] && eval "exec $fd>&-" 2>/dev/null
    done
    if is_root; then
      exec runuser -u "$PG_USER" -- "$@"
    else
      exec "$@"
    fi
  )
}

# --------------------------------------------------------------- install ---
# The newest installed server's bin folder, or nothing.
newest_bindir() {
  local d best=""
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x $d/initdb && -x $d/postgres && -x $d/pg_ctl ]] || continue
    best=$(printf '%s\n%s\n' "$best" "$d" | sed '/^$/d' | sort -V | tail -n 1)
  done
  printf '%s' "$best"
}

POLICY=/usr/sbin/policy-rc.d
POLICY_BACKUP=""
POLICY_INSTALLED=0
restore_policy() {
  if [[ $POLICY_INSTALLED -eq 1 ]]; then
    if [[ -n $POLICY_BACKUP ]]; then mv -f "$POLICY_BACKUP" "$POLICY"; else rm -f "$POLICY"; fi
    POLICY_INSTALLED=0
  fi
}

do_install() {
  if [[ -z $(newest_bindir) ]] || ! command -v openssl >/dev/null || ! command -v psql >/dev/null; then
    is_root || die "PostgreSQL is not installed and installing it needs root (apt-get install ${PACKAGES[*]})"
    log "installing: ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the package's maintainer scripts from starting the system's
    # cluster (it would hold port 5432 and run for nothing).
    if [[ -e $POLICY ]]; then
      POLICY_BACKUP=$(mktemp /usr/sbin/.policy-rc.d.XXXXXX)
      cp -p "$POLICY" "$POLICY_BACKUP"
    fi
    POLICY_INSTALLED=1
    trap restore_policy EXIT
    printf '#!/bin/sh\nexit 101\n' >"$POLICY"
    chmod 0755 "$POLICY"
    local aptlog
    aptlog=$(mktemp /tmp/postgres-apt.XXXXXX)
    apt-get update -q >"$aptlog" 2>&1 || { tail -n 25 "$aptlog" >&2; die "apt-get update failed (log: $aptlog)"; }
    apt-get install -y -q --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
      "${PACKAGES[@]}" >>"$aptlog" 2>&1 || { tail -n 25 "$aptlog" >&2; die "apt-get install failed (log: $aptlog)"; }
    rm -f "$aptlog"
    restore_policy
    trap - EXIT
    [[ -n $(newest_bindir) ]] || die "installed ${PACKAGES[*]} but found no /usr/lib/postgresql/*/bin/initdb"
  fi
  if is_root && ! id -u "$PG_USER" >/dev/null 2>&1; then
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$PG_USER"
  fi
}

# The bin folder of the server that owns the data directory: the version
# initdb'd there (a data directory works only with its major version), else
# the newest installed one.
BINDIR=""
pick_bindir() {
  local v
  if [[ -s $DATA_DIR/PG_VERSION ]]; then
    v=$(tr -dc 0-9. <"$DATA_DIR/PG_VERSION")
    BINDIR=/usr/lib/postgresql/$v/bin
    [[ -x $BINDIR/postgres ]] || die "$DATA_DIR was made by PostgreSQL $v, which is not installed: run down and remove $PG_DIR"
  else
    BINDIR=$(newest_bindir)
    [[ -n $BINDIR ]] || die "no PostgreSQL server installed (run: $0 install)"
  fi
}

# ----------------------------------------------------------------- state ---
check_paths() {
  [[ $PG_DIR == /* ]] || die "LIAISON_PG_DIR must be an absolute path: $PG_DIR"
  (( ${#SOCK_DIR} + 20 < 107 )) || die "state folder path too long for Unix sockets: $PG_DIR"
  if ! is_root && [[ -e $PG_DIR && ! -O $PG_DIR ]]; then
    die "$PG_DIR belongs to $(stat -c %U "$PG_DIR"): run this script as root, or as that user, or choose another LIAISON_PG_DIR"
  fi
}

# Generated files are replaced only when their content changed; CHANGED
# tells whether any was.
CHANGED=0
install_if_changed() {  # new-file target
  if [[ -f $2 ]] && cmp -s "$1" "$2"; then rm -f "$1"; else mv -f "$1" "$2"; CHANGED=1; fi
}

write_tls() {
  # A private CA (ca.pem) and a server certificate it signed (cert.pem):
  # rustls (webpki) refuses a self-signed CA certificate used directly as
  # the server's (CaUsedAsEndEntity).
  if ! [[ -s $TLS_DIR/ca.pem && -s $TLS_DIR/cert.pem && -s $TLS_DIR/key.pem ]]; then
    mkdir -p "$TLS_DIR"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 \
      -keyout "$TLS_DIR/ca-key.pem" -out "$TLS_DIR/ca.pem" \
      -subj "/CN=Liaison PostgreSQL test CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      >/dev/null 2>&1 || die "openssl could not create the test CA"
    openssl req -newkey rsa:2048 -nodes -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/server.csr" \
      -subj "/CN=localhost" >/dev/null 2>&1 || die "openssl could not create the server key"
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n' \
      >"$TLS_DIR/server.ext"
    openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca-key.pem" \
      -CAcreateserial -days 3650 -extfile "$TLS_DIR/server.ext" -out "$TLS_DIR/cert.pem" \
      >/dev/null 2>&1 || die "openssl could not sign the server certificate"
    rm -f "$TLS_DIR/server.csr" "$TLS_DIR/server.ext"
  fi
  # The server refuses a key file others may read; it must own it.
  chown "$(server_user)" "$TLS_DIR/key.pem" "$TLS_DIR/cert.pem"
  chmod 0600 "$TLS_DIR/key.pem" "$TLS_DIR/ca-key.pem"
  chmod 0644 "$TLS_DIR/cert.pem" "$TLS_DIR/ca.pem"
  chmod 0755 "$TLS_DIR"
}

init_cluster() {
  [[ -s $DATA_DIR/PG_VERSION ]] && return 0
  log "initdb in $DATA_DIR"
  rm -rf "$DATA_DIR"
  install -d -o "$(server_user)" -m 0700 "$DATA_DIR"
  # --auth-host is overwritten by write_pg_hba; --no-sync would be faster
  # but these tests are about durability, so nothing here skips an fsync.
  as_server "$BINDIR/initdb" -D "$DATA_DIR" -U "$SUPERUSER" --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 \
    >"$LOG_DIR/initdb.log" 2>&1 || { show_log "$LOG_DIR/initdb.log"; rm -rf "$DATA_DIR"; die "initdb failed"; }
  # The generated postgresql.conf keeps initdb's defaults; ours comes last.
  printf "\n# Liaison's test settings (tests/postgres.sh).\ninclude = 'liaison.conf'\n" \
    | as_server tee -a "$DATA_DIR/postgresql.conf" >/dev/null
}

write_server_config() {
  local tmp="$DATA_DIR/liaison.conf.new"
  cat >"$tmp" <<EOF
# Generated by tests/postgres.sh — private Liaison test instance. Do not edit.
listen_addresses = '$BIND'
port = $PORT
unix_socket_directories = '$SOCK_DIR'
unix_socket_permissions = 0700
max_connections = $MAX_CONNECTIONS
password_encryption = 'scram-sha-256'

ssl = on
ssl_cert_file = '$TLS_DIR/cert.pem'
ssl_key_file = '$TLS_DIR/key.pem'
ssl_min_protocol_version = 'TLSv1.2'

# Durability is what the store tests check: nothing relaxed.
fsync = on
synchronous_commit = on
full_page_writes = on
# After a crash (down --immediate, kill -9) the start-up syncs the data
# directory first: one syncfs() instead of an fsync per file (~2.5 s here).
recovery_init_sync_method = syncfs

# stderr goes to log/postgres.log (pg_ctl -l).
log_destination = 'stderr'
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
EOF
  chown "$(server_user)" "$tmp"; chmod 0600 "$tmp"
  install_if_changed "$tmp" "$DATA_DIR/liaison.conf"

  tmp="$DATA_DIR/pg_hba.conf.new"
  cat >"$tmp" <<EOF
# Generated by tests/postgres.sh. TYPE DATABASE USER ADDRESS METHOD
# The socket folder is open only to root and the server's user.
local   all       all                     trust
# TCP: loopback IPv4 only, password (SCRAM) only, with or without TLS.
host    all       all       127.0.0.1/32  scram-sha-256
EOF
  chown "$(server_user)" "$tmp"; chmod 0600 "$tmp"
  install_if_changed "$tmp" "$DATA_DIR/pg_hba.conf"
}

write_config() {
  check_paths
  mkdir -p "$PG_DIR"
  chmod 0755 "$PG_DIR"
  install -d -o "$(server_user)" -m 0755 "$LOG_DIR"
  install -d -o "$(server_user)" -m 0700 "$SOCK_DIR"
  # The server's user must reach its files through the state folder's parents.
  as_server test -x "$PG_DIR" || die "user $(server_user) cannot enter $PG_DIR (choose a LIAISON_PG_DIR under /tmp)"
  write_tls
  init_cluster
  write_server_config
}

# ------------------------------------------------------------- processes ---
# proc_alive PID: running and not a zombie (the server gets reparented to
# PID 1, which may reap it late; kill -0 alone would call a zombie alive).
proc_alive() {
  local st
  [[ -n ${1:-} && -r /proc/$1/stat ]] || return 1
  { read -r st <"/proc/$1/stat"; } 2>/dev/null || return 1
  st=${st##*) }
  [[ -n $st && ${st%% *} != Z ]]
}

# Prints the postmaster's pid if it runs: the first line of postmaster.pid,
# alive, and a postgres whose command line names our data directory
# (guards against a recycled pid).
server_pid() {
  local pid cmd
  [[ -s $DATA_DIR/postmaster.pid ]] || return 1
  pid=$(head -n 1 "$DATA_DIR/postmaster.pid" | tr -dc 0-9)
  proc_alive "$pid" || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmd == *postgres*" -D $DATA_DIR "* ]] || return 1
  printf '%s\n' "$pid"
}
server_running() { server_pid >/dev/null; }

ready() {
  "$BINDIR/pg_isready" -q -h "$BIND" -p "$PORT" -d postgres -t 2 >/dev/null 2>&1
}

show_log() {  # file
  [[ -f $1 ]] || return 0
  printf -- '--- last lines of %s ---\n' "$1" >&2
  tail -n 25 "$1" >&2
}

# Runs SQL as the superuser over the Unix socket; prints unaligned rows.
superuser_sql() {
  as_server "$BINDIR/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$SOCK_DIR" -p "$PORT" \
    -U "$SUPERUSER" -d postgres -c "$1"
}

start_server() {
  server_running && return 0
  # A postmaster killed with -9 leaves its lock files behind, naming its
  # pid; until PID 1 reaps it (late, here) or once the pid is recycled, a
  # new server takes that pid for a running server and refuses to start.
  # server_pid said no server of ours runs. Removing them is safe: the
  # real interlock against orphaned backends still using the data
  # directory is the shared memory segment, which PostgreSQL finds by the
  # data directory's inode and refuses to start while anything is attached.
  rm -f "$DATA_DIR/postmaster.pid" "$SOCK_DIR/.s.PGSQL.$PORT.lock"
  as_server setsid "$BINDIR/pg_ctl" -D "$DATA_DIR" -l "$LOG_DIR/postgres.log" \
    -w -t "$WAIT_SECONDS" start \
    </dev/null >>"$LOG_DIR/start.log" 2>&1 || {
    show_log "$LOG_DIR/start.log"; show_log "$LOG_DIR/postgres.log"
    die "PostgreSQL failed to start on $BIND:$PORT"
  }
}

wait_ready() {
  local deadline=$((SECONDS + WAIT_SECONDS))
  while (( SECONDS < deadline )); do
    ready && return 0
    server_running || { show_log "$LOG_DIR/postgres.log"; die "PostgreSQL exited during start-up"; }
    sleep 0.1
  done
  show_log "$LOG_DIR/postgres.log"
  die "PostgreSQL on $BIND:$PORT did not accept connections within ${WAIT_SECONDS}s"
}

# The login role the tests use. Its password is set again on every up (a
# cheap statement), so a changed PASSWORD takes effect.
ensure_role() {
  superuser_sql "DO \$\$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') THEN
      CREATE ROLE $ROLE LOGIN CREATEDB;
    END IF;
    ALTER ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD';
  END \$\$;" >/dev/null || die "could not create the role $ROLE"
}

summary() {
  printf 'postgres up: %s:%s (PostgreSQL %s, pid %s), role %s password %s, TLS CA %s; state %s\n' \
    "$BIND" "$PORT" "$(tr -dc 0-9. <"$DATA_DIR/PG_VERSION")" "$(server_pid)" "$ROLE" "$PASSWORD" \
    "$TLS_DIR/ca.pem" "$PG_DIR"
}

lock() {
  mkdir -p "$(dirname "$PG_DIR")"
  if [[ -e $LOCK_FILE && ! -w $LOCK_FILE ]]; then
    die "cannot write $LOCK_FILE (it belongs to $(stat -c %U "$LOCK_FILE")): run this script as root, or choose another LIAISON_PG_DIR"
  fi
  exec 9>"$LOCK_FILE"
  flock 9
}

do_up() {
  lock
  do_install
  pick_bindir
  write_config
  if server_running; then
    if (( CHANGED )); then
      log "configuration changed; reloading"
      superuser_sql "SELECT pg_reload_conf()" >/dev/null
      sleep 0.2
      if [[ -n $(superuser_sql "SELECT string_agg(name, ' ') FROM pg_settings WHERE pending_restart") ]]; then
        log "a changed setting needs a restart; restarting"
        stop_server fast
        start_server
      fi
    fi
  else
    start_server
  fi
  wait_ready
  ensure_role
  summary
}

stop_server() {  # fast|immediate
  local pid sig i
  pid=$(server_pid) || return 0
  case $1 in
    fast) sig=INT ;;       # roll back open transactions, close clients, checkpoint
    immediate) sig=QUIT ;; # like a crash: the next start replays WAL
  esac
  kill -s "$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < 600; i++)); do
    proc_alive "$pid" || return 0
    sleep 0.05
  done
  die "PostgreSQL (pid $pid) did not stop within 30 s"
}

do_down() {
  local mode=fast
  case "${1:-}" in
    "") ;;
    --immediate) mode=immediate ;;
    *) die "usage: $0 down [--immediate]" ;;
  esac
  lock
  stop_server "$mode"
  echo "postgres down"
}

do_status() {
  local pid
  if pid=$(server_pid); then
    pick_bindir
    if ready; then
      echo "postgres: running (pid $pid), $BIND:$PORT, state $PG_DIR"
    else
      echo "postgres: running (pid $pid) but not accepting connections on $BIND:$PORT"; return 1
    fi
  else
    echo "postgres: not running ($BIND:$PORT, state $PG_DIR)"; return 1
  fi
}

do_env() {
  printf 'export LIAISON_PG_URL=%q\n' "postgres://$ROLE:$PASSWORD@$BIND:$PORT/postgres"
  printf 'export LIAISON_PG_HOST=%q\n' "$BIND"
  printf 'export LIAISON_PG_PORT=%q\n' "$PORT"
  printf 'export LIAISON_PG_CA=%q\n' "$TLS_DIR/ca.pem"
}

case "${1:-}" in
  up) do_up ;;
  down) shift; do_down "$@" ;;
  status) do_status ;;
  install) do_install ;;
  env) do_env ;;
  *) echo "usage: $0 install|up|down [--immediate]|status|env" >&2; exit 2 ;;
esac
