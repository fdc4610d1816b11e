#!/usr/bin/env bash
# tests/mailstack.sh — private, loopback-only mail stack for Liaison integration tests.
#
# Installs (from Debian packages) and runs a private Postfix (SMTP) instance that
# delivers over LMTP into a private Dovecot (IMAP) instance. Nothing from
# /etc/postfix or /etc/dovecot is used and the system's own instances are never
# started (or, if they were, they are stopped so they hold no ports).
#
#   SMTP   127.0.0.1:2525  no auth from loopback; accepts mail only for the
#                          virtual domains below, refuses relaying elsewhere
#                          (opportunistic STARTTLS, certificate from a private test CA)
#   SMTPS  127.0.0.1:2465  the same with implicit TLS (no plaintext at all)
#   IMAP   127.0.0.1:1143  plaintext LOGIN allowed, STARTTLS available
#   IMAPS  127.0.0.1:1993  implicit TLS, cert signed by tls/ca.pem (CN=localhost,
#                          SAN IP:127.0.0.1, DNS:localhost)
#   SUBMISSION 127.0.0.1:2587  SMTP AUTH required (Dovecot SASL: PLAIN LOGIN
#                          XOAUTH2 OAUTHBEARER), STARTTLS offered
#
# OAuth2: every account also logs in with a bearer token (SASL XOAUTH2 or
# OAUTHBEARER, IMAP and submission). Dovecot validates the token itself
# (passdb oauth2, introspection_mode = local): a JWT signed HS256 with the key
# in oauth2/hs256.key (random per state folder; the tests' token endpoint
# emulator signs with it), "typ":"JWT", iss "liaison-token-emulator", and the
# claim "tenant_domain" = "@<the login's domain>". That is how an app-only
# Microsoft 365 token works (one token for every mailbox the app may use,
# the mailbox named in the SASL user=); a token for another domain is
# refused. Each passdb has a mechanisms filter, so a password is never taken
# as a token nor a token as a password.
#
# Domains: liaison.test contoso.test fabrikam.test greylist.test
# greylist.test answers every RCPT with "451 4.7.1 try again later" (a
# greylisting or overloaded destination, for the outbox scheduling tests).
# Users (IMAP login = full address, password "liaison-dev"): see USERS below.
# Plus-addressing: user+tag@domain is delivered to user's INBOX; the
# Delivered-To header keeps "+tag".
# Bouncing: mail to BOUNCING addresses is accepted at RCPT, then fails in
# delivery (transport "bouncer", a pipe that exits 67 = EX_NOUSER), so
# Postfix itself sends a real bounce (DSN, null sender) to the envelope
# sender. (The "error" transport would be refused at RCPT already.)
#
# Usage: tests/mailstack.sh up|down|status|install
#   install  apt-get install the packages (quick no-op when already installed)
#   up       install, write config, start both servers, wait until they greet
#   down     stop only the instances this script started
#   status   report each server; exit non-zero unless both run
# After editing USERS/DOMAINS, run down then up (up on a running stack is a
# no-op).
#
# State folder: ${LIAISON_MAILSTACK_DIR:-/tmp/liaison-ms} (keep it short: Unix
# socket paths are limited to 107 bytes). Layout:
#   postfix/            main.cf, master.cf, vmailbox, transport, greylist (texthash maps)
#   pf-queue/           Postfix queue_directory (pid/master.pid inside)
#   pf-data/            Postfix data_directory
#   dovecot.conf        Dovecot config;  users (passwd-file)
#   dc/                 Dovecot base_dir (master.pid, lmtp socket, ...)
#   dc-state/           Dovecot state_dir
#   tls/                ca.pem (test CA to trust), cert.pem + key.pem (server)
#   oauth2/             hs256.key (the JWT signing secret), keys/ (Dovecot's
#                       key dict: keys/default/HS256/default = base64 of it)
#   mail/<domain>/<user>/Maildir/   each user's mailbox
#   log/postfix.log, log/dovecot.log, log/dovecot-info.log, log/start.log
#
# Must run as root (apt, binding services, dropping privileges).
set -euo pipefail

# ---------------------------------------------------------------- settings ---
USERS=(
  commands@liaison.test
  invites@liaison.test
  helpdesk@liaison.test
  partner1@liaison.test
  partner2@liaison.test
  alice@contoso.test
  bob@fabrikam.test
  carol@contoso.test
  dave@fabrikam.test
  dotted@liaison.test
)
# Users whose IMAP hierarchy separator is "." instead of the instance's "/"
# (Dovecot's Maildir default, as many hosted servers have it), for the tests
# of folder names. A per-user override: the passdb's userdb_ extra field.
DOT_SEPARATOR_USERS=(dotted@liaison.test)
PASSWORD="liaison-dev"
BOUNCING=(gone@contoso.test)  # accepted, then bounced by Postfix (see above)
DOMAINS=(liaison.test contoso.test fabrikam.test greylist.test)   # domains of USERS are added too
# Domains whose every recipient is refused temporarily at RCPT time.
GREYLIST_DOMAINS=(greylist.test)

BIND=127.0.0.1
# A private instance beside the shared one (for work that changes this
# script's configuration): LIAISON_MAILSTACK_PORT_OFFSET=N moves every port
# by N, and it needs its own LIAISON_MAILSTACK_DIR. The tests read the same
# two variables (tests/common: ports, and the lock file
# /tmp/liaison-mailstack-N.lock instead of /tmp/liaison-mailstack.lock).
PORT_OFFSET=${LIAISON_MAILSTACK_PORT_OFFSET:-0}
SMTP_PORT=$((2525 + PORT_OFFSET))
SMTPS_PORT=$((2465 + PORT_OFFSET))
IMAP_PORT=$((1143 + PORT_OFFSET))
IMAPS_PORT=$((1993 + PORT_OFFSET))
SUBMISSION_PORT=$((2587 + PORT_OFFSET))
WAIT_SECONDS=30
MAIL_USER=vmail               # owner of the mail storage (created if missing)
PACKAGES=(postfix dovecot-core dovecot-imapd dovecot-lmtpd swaks openssl)

MS_DIR="${LIAISON_MAILSTACK_DIR:-/tmp/liaison-ms}"
PF_CONF="$MS_DIR/postfix"
PF_QUEUE="$MS_DIR/pf-queue"
PF_DATA="$MS_DIR/pf-data"
DC_CONF="$MS_DIR/dovecot.conf"
DC_BASE="$MS_DIR/dc"
DC_STATE="$MS_DIR/dc-state"
DC_USERS="$MS_DIR/users"
TLS_DIR="$MS_DIR/tls"
MAIL_DIR="$MS_DIR/mail"
LOG_DIR="$MS_DIR/log"
OAUTH2_DIR="$MS_DIR/oauth2"
OAUTH2_ISSUER="liaison-token-emulator"

log() { printf 'mailstack: %s\n' "$*" >&2; }
die() { printf 'mailstack: error: %s\n' "$*" >&2; exit 1; }

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root"; }

# --------------------------------------------------------------- install ---
missing_packages() {
  local p st
  declare -A ok=()
  while read -r p st; do
    [[ $st == "install ok installed" ]] && ok[$p]=1
  done < <(dpkg-query -W -f='${Package} ${Status}\n' "${PACKAGES[@]}" 2>/dev/null || true)
  for p in "${PACKAGES[@]}"; do
    [[ -n ${ok[$p]:-} ]] || printf '%s\n' "$p"
  done
}

POLICY=/usr/sbin/policy-rc.d
POLICY_BACKUP=""
POLICY_INSTALLED=0
restore_policy() {
  if [[ $POLICY_INSTALLED -eq 1 ]]; then
    if [[ -n $POLICY_BACKUP ]]; then
      mv -f "$POLICY_BACKUP" "$POLICY"
    else
      rm -f "$POLICY"
    fi
    POLICY_INSTALLED=0
  fi
}

# Stop system (not ours) postfix/dovecot if they run, so they hold no ports.
stop_system_instances() {
  local pid
  if [[ -s /var/spool/postfix/pid/master.pid ]]; then
    pid=$(tr -dc 0-9 </var/spool/postfix/pid/master.pid)
    if proc_alive "$pid"; then
      log "stopping the system's postfix (pid $pid)"
      postfix stop </dev/null >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    fi
  fi
  if [[ -s /run/dovecot/master.pid ]]; then
    pid=$(tr -dc 0-9 </run/dovecot/master.pid)
    if proc_alive "$pid"; then
      log "stopping the system's dovecot (pid $pid)"
      kill "$pid" 2>/dev/null || true
    fi
  fi
  if [[ -d /run/systemd/system ]]; then
    systemctl stop postfix.service dovecot.service dovecot.socket >/dev/null 2>&1 || true
  fi
}

do_install() {
  need_root
  local missing
  missing=$(missing_packages)
  if [[ -n $missing ]]; then
    # shellcheck disable=SC2086
    log "installing:" $missing
    export DEBIAN_FRONTEND=noninteractive
    # Keep maintainer scripts from starting the system's own instances.
    if [[ -e $POLICY ]]; then
      POLICY_BACKUP=$(mktemp /usr/sbin/.policy-rc.d.XXXXXX)
      cp -p "$POLICY" "$POLICY_BACKUP"
    fi
    POLICY_INSTALLED=1
    trap restore_policy EXIT
    printf '#!/bin/sh\nexit 101\n' >"$POLICY"
    chmod 0755 "$POLICY"
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    local aptlog
    aptlog=$(mktemp /tmp/mailstack-apt.XXXXXX)
    apt-get update -q >"$aptlog" 2>&1 || { tail -n 25 "$aptlog" >&2; die "apt-get update failed (log: $aptlog)"; }
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
      $missing >>"$aptlog" 2>&1 || { tail -n 25 "$aptlog" >&2; die "apt-get install failed (log: $aptlog)"; }
    rm -f "$aptlog"
    restore_policy
    trap - EXIT
  fi
  if ! id -u "$MAIL_USER" >/dev/null 2>&1; then
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$MAIL_USER"
  fi
  stop_system_instances
}

# ----------------------------------------------------------------- state ---
all_domains() {
  local u
  { printf '%s\n' "${DOMAINS[@]}"; for u in "${USERS[@]}"; do printf '%s\n' "${u#*@}"; done; } \
    | sort -u
}

# Generated files get an mtime in the past: postfix start otherwise waits ~2 s
# when its config changed during the last seconds.
age() { touch -d '-10 seconds' "$@"; }

write_postfix_config() {
  local domains
  domains=$(all_domains | tr '\n' ' ')
  mkdir -p "$PF_CONF" "$PF_QUEUE" "$PF_DATA"
  chown root:root "$PF_QUEUE"; chmod 0755 "$PF_QUEUE"
  chown postfix:postfix "$PF_DATA"; chmod 0700 "$PF_DATA"

  cat >"$PF_CONF/main.cf.new" <<EOF
# Generated by tests/mailstack.sh — private Liaison test instance. Do not edit.
compatibility_level = 3.6
queue_directory = $PF_QUEUE
data_directory = $PF_DATA
maillog_file = $LOG_DIR/postfix.log
maillog_file_prefixes = $LOG_DIR
syslog_name = liaison-ms/postfix
mail_owner = postfix
setgid_group = postdrop

myhostname = mail.liaison.test
mydomain = liaison.test
myorigin = \$myhostname
mydestination =
mynetworks = 127.0.0.0/8
inet_interfaces = $BIND
inet_protocols = ipv4
smtpd_banner = \$myhostname ESMTP Liaison test MTA

# No DNS, no outbound mail.
disable_dns_lookups = yes
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
default_transport = error:outbound mail disabled (Liaison test stack)
relay_transport = error:relaying disabled (Liaison test stack)
local_transport = error:local delivery disabled (Liaison test stack)
relay_domains =
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no

# Virtual mailboxes delivered to Dovecot over LMTP.
recipient_delimiter = +
virtual_mailbox_domains = $domains
virtual_mailbox_maps = texthash:$PF_CONF/vmailbox
transport_maps = texthash:$PF_CONF/transport
virtual_transport = lmtp:unix:$DC_BASE/lmtp
lmtp_destination_recipient_limit = 50

# Anyone on loopback may submit, but only to our domains.
smtpd_relay_restrictions = reject_unauth_destination
# greylist.test: 451 at RCPT, before the unknown-user check.
smtpd_recipient_restrictions = check_recipient_access texthash:$PF_CONF/greylist, reject_unlisted_recipient, reject_unauth_destination
smtpd_reject_unlisted_recipient = yes
smtpd_helo_required = no

message_size_limit = 52428800
mailbox_size_limit = 0
virtual_mailbox_limit = 0

smtpd_tls_security_level = may
smtpd_tls_cert_file = $TLS_DIR/cert.pem
smtpd_tls_key_file = $TLS_DIR/key.pem
smtpd_tls_session_cache_database =
EOF

  cat >"$PF_CONF/master.cf.new" <<EOF
# Generated by tests/mailstack.sh. No smtp client, no local/virtual agents.
# service         type       private unpriv chroot wakeup maxproc command
$BIND:$SMTP_PORT  inet       n       -      n      -      -       smtpd
$BIND:$SMTPS_PORT inet       n       -      n      -      -       smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
$BIND:$SUBMISSION_PORT inet   n       -      n      -      -       smtpd
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path=$DC_BASE/auth-client
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o line_length_limit=16384
pickup            unix       n       -      n      60     1       pickup
cleanup           unix       n       -      n      -      0       cleanup
qmgr              unix       n       -      n      300    1       qmgr
tlsmgr            unix       -       -      n      1000?  1       tlsmgr
rewrite           unix       -       -      n      -      -       trivial-rewrite
bounce            unix       -       -      n      -      0       bounce
defer             unix       -       -      n      -      0       bounce
trace             unix       -       -      n      -      0       bounce
verify            unix       -       -      n      -      1       verify
flush             unix       n       -      n      1000?  0       flush
proxymap          unix       -       -      n      -      -       proxymap
proxywrite        unix       -       -      n      -      1       proxymap
showq             unix       n       -      n      -      -       showq
error             unix       -       -      n      -      -       error
retry             unix       -       -      n      -      -       error
discard           unix       -       -      n      -      -       discard
lmtp              unix       -       -      n      -      -       lmtp
anvil             unix       -       -      n      -      1       anvil
scache            unix       -       -      n      -      1       scache
postlog           unix-dgram n       -      n      -      1       postlogd
bouncer           unix       -       n      n      -      -       pipe
  flags=q user=nobody argv=/bin/sh -c { echo 5.1.1 mailbox unavailable, Liaison test stack bounces it; exit 67 }
EOF

  : >"$PF_CONF/vmailbox.new"
  local u
  for u in "${USERS[@]}"; do printf '%s OK\n' "$u" >>"$PF_CONF/vmailbox.new"; done
  : >"$PF_CONF/transport.new"
  for u in "${BOUNCING[@]}"; do
    printf '%s OK\n' "$u" >>"$PF_CONF/vmailbox.new"
    printf '%s bouncer:\n' "$u" >>"$PF_CONF/transport.new"
  done
  : >"$PF_CONF/greylist.new"
  local d
  for d in "${GREYLIST_DOMAINS[@]}"; do
    printf '%s 451 4.7.1 try again later\n' "$d" >>"$PF_CONF/greylist.new"
  done

  local f
  for f in main.cf master.cf vmailbox transport greylist; do
    if [[ -f $PF_CONF/$f ]] && cmp -s "$PF_CONF/$f.new" "$PF_CONF/$f"; then
      rm -f "$PF_CONF/$f.new"
    else
      mv -f "$PF_CONF/$f.new" "$PF_CONF/$f"
    fi
  done
  age "$PF_CONF/main.cf" "$PF_CONF/master.cf" "$PF_CONF/vmailbox" "$PF_CONF/transport" "$PF_CONF/greylist"
}

write_dovecot_config() {
  local uid gid dh=""
  uid=$(id -u "$MAIL_USER"); gid=$(id -g "$MAIL_USER")
  mkdir -p "$DC_STATE" "$MAIL_DIR"
  chown "$uid:$gid" "$MAIL_DIR"; chmod 0750 "$MAIL_DIR"
  [[ -r /usr/share/dovecot/dh.pem ]] && dh="ssl_dh = </usr/share/dovecot/dh.pem"

  local u tmp="$DC_USERS.new"
  : >"$tmp"
  local extra
  for u in "${USERS[@]}"; do
    extra=""
    [[ " ${DOT_SEPARATOR_USERS[*]} " == *" $u "* ]] && extra="::::::userdb_namespace/inbox/separator=."
    printf '%s:{PLAIN}%s%s\n' "$u" "$PASSWORD" "$extra" >>"$tmp"
  done
  chown root:dovecot "$tmp" 2>/dev/null || true
  chmod 0640 "$tmp"
  if [[ -f $DC_USERS ]] && cmp -s "$tmp" "$DC_USERS"; then rm -f "$tmp"; else mv -f "$tmp" "$DC_USERS"; fi

  # Pre-create each Maildir (Dovecot would otherwise create it on first use,
  # leaving a stray "maildirfolder" file in the root).
  local d
  for u in "${USERS[@]}"; do
    d="$MAIL_DIR/${u#*@}/${u%@*}/Maildir"
    [[ -d $d/new ]] && continue
    install -d -o "$uid" -g "$gid" -m 0700 "$MAIL_DIR/${u#*@}" "${d%/Maildir}" "$d" "$d/cur" "$d/new" "$d/tmp"
  done

  cat >"$DC_CONF.new" <<EOF
# Generated by tests/mailstack.sh — private Liaison test instance. Do not edit.
# Includes nothing from /etc/dovecot.
instance_name = liaison-ms
hostname = mail.liaison.test
base_dir = $DC_BASE
state_dir = $DC_STATE
log_path = $LOG_DIR/dovecot.log
info_log_path = $LOG_DIR/dovecot-info.log
protocols = imap lmtp
listen = $BIND
shutdown_clients = yes

ssl = yes
ssl_cert = <$TLS_DIR/cert.pem
ssl_key = <$TLS_DIR/key.pem
$dh
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8

# Each passdb takes only its own mechanisms: without the filters a password
# would pass as a token and a token as a password. "none" is the lookup
# without a login (LMTP delivery checking that a user exists, through the
# static userdb): only the passwd-file can answer it.
passdb {
  driver = passwd-file
  mechanisms = plain login none
  args = scheme=PLAIN username_format=%u $DC_USERS
}
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $MS_DIR/dovecot-oauth2.conf.ext
}
userdb {
  driver = static
  args = uid=$uid gid=$gid home=$MAIL_DIR/%d/%n
}
first_valid_uid = $uid
last_valid_uid = 0
first_valid_gid = $gid
mail_location = maildir:~/Maildir

recipient_delimiter = +
lmtp_save_to_detail_mailbox = no

namespace inbox {
  inbox = yes
  separator = /
}

service imap-login {
  inet_listener imap {
    address = $BIND
    port = $IMAP_PORT
  }
  inet_listener imaps {
    address = $BIND
    port = $IMAPS_PORT
    ssl = yes
  }
}
service lmtp {
  unix_listener lmtp {
    mode = 0666
  }
}
# Postfix's submission service authenticates through this (SASL).
service auth {
  unix_listener auth-client {
    mode = 0660
    user = postfix
    group = postfix
  }
}
# Without this, a correct login from 127.0.0.1 right after a failed one is
# delayed by seconds (anvil auth penalty).
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
protocol imap {
  mail_max_userip_connections = 100
}
EOF
  if [[ -f $DC_CONF ]] && cmp -s "$DC_CONF.new" "$DC_CONF"; then rm -f "$DC_CONF.new"; else mv -f "$DC_CONF.new" "$DC_CONF"; fi
  write_oauth2_config
}

# The bearer-token check: local validation of HS256 JWTs (see the header).
# Dovecot applies username_format to both the login name and the claim, so
# %Ld compares the login's domain with the domain of the claim
# "tenant_domain" = "@liaison.test" (a claim without "@" would give ""). Keys are read per auth process and cached: a changed key
# needs a restart (down, up).
write_oauth2_config() {
  mkdir -p "$OAUTH2_DIR/keys/default/HS256"
  if [[ ! -s $OAUTH2_DIR/hs256.key ]]; then
    (umask 077; openssl rand -hex 32 | tr -d '\n' >"$OAUTH2_DIR/hs256.key")
  fi
  chgrp -R dovecot "$OAUTH2_DIR" 2>/dev/null || true
  chmod 0750 "$OAUTH2_DIR" "$OAUTH2_DIR/keys" "$OAUTH2_DIR/keys/default" "$OAUTH2_DIR/keys/default/HS256"
  local key="$OAUTH2_DIR/keys/default/HS256/default"
  base64 -w0 <"$OAUTH2_DIR/hs256.key" >"$key.new"
  chgrp dovecot "$key.new" 2>/dev/null || true
  chmod 0640 "$key.new"
  if [[ -f $key ]] && cmp -s "$key.new" "$key"; then rm -f "$key.new"; else mv -f "$key.new" "$key"; fi
  cat >"$MS_DIR/dovecot-oauth2.conf.ext.new" <<EOF
introspection_mode = local
local_validation_key_dict = fs:posix:prefix=$OAUTH2_DIR/keys/
issuers = $OAUTH2_ISSUER
username_attribute = tenant_domain
username_format = %Ld
EOF
  local f="$MS_DIR/dovecot-oauth2.conf.ext"
  if [[ -f $f ]] && cmp -s "$f.new" "$f"; then rm -f "$f.new"; else mv -f "$f.new" "$f"; fi
}

write_tls() {
  # A private CA (ca.pem) and a server certificate it signed (cert.pem).
  # Clients trust ca.pem; a self-signed CA certificate used directly as the
  # server's is refused by strict verifiers (webpki: CaUsedAsEndEntity).
  mkdir -p "$TLS_DIR"
  [[ -s $TLS_DIR/ca.pem && -s $TLS_DIR/cert.pem && -s $TLS_DIR/key.pem ]] && return 0
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 \
    -keyout "$TLS_DIR/ca-key.pem" -out "$TLS_DIR/ca.pem" \
    -subj "/CN=Liaison test CA" \
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
  chmod 0600 "$TLS_DIR/key.pem" "$TLS_DIR/ca-key.pem"; chmod 0644 "$TLS_DIR/cert.pem" "$TLS_DIR/ca.pem"
}

check_paths() {
  [[ $MS_DIR == /* ]] || die "LIAISON_MAILSTACK_DIR must be an absolute path: $MS_DIR"
  # Longest Dovecot socket is about base_dir + "/login/imap-urlauth-postlogin".
  (( ${#DC_BASE} + 30 < 107 )) || die "state folder path too long for Unix sockets: $MS_DIR"
}

write_config() {
  check_paths
  mkdir -p "$MS_DIR" "$LOG_DIR"
  chmod 0755 "$MS_DIR" "$LOG_DIR"
  write_tls
  write_postfix_config
  write_dovecot_config
}

# ------------------------------------------------------------- processes ---
# proc_alive PID: running and not a zombie (our daemons get reparented to
# PID 1, which may reap them late; kill -0 alone would call a zombie alive).
proc_alive() {
  local st
  [[ -n $1 && -r /proc/$1/stat ]] || return 1
  { read -r st <"/proc/$1/stat"; } 2>/dev/null || return 1
  st=${st##*) }
  [[ -n $st && ${st%% *} != Z ]]
}
# pidfile_pid PIDFILE PATTERN: prints the pid if that process is alive and its
# command line matches PATTERN (guards against recycled pids).
pidfile_pid() {
  local pid cmd
  [[ -s $1 ]] || return 1
  pid=$(tr -dc 0-9 <"$1")
  proc_alive "$pid" || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  # shellcheck disable=SC2053
  [[ $cmd == $2 ]] || return 1
  printf '%s\n' "$pid"
}
postfix_pid() { pidfile_pid "$PF_QUEUE/pid/master.pid" '*postfix*/master*'; }
dovecot_pid() { pidfile_pid "$DC_BASE/master.pid" "*dovecot*$DC_CONF*"; }
postfix_running() { postfix_pid >/dev/null; }
dovecot_running() { dovecot_pid >/dev/null; }

# greets PORT PREFIX: connects to 127.0.0.1:PORT and checks the greeting.
greets() {
  # shellcheck disable=SC2016  # expanded by the inner bash
  timeout 3 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    IFS= read -r -t 2 line <&3 || exit 1
    [[ $line == "$2"* ]] || exit 1
    case $2 in 220*) printf "QUIT\r\n" >&3;; *) printf "a LOGOUT\r\n" >&3;; esac
    exec 3>&-' _ "$1" "$2" 2>/dev/null
}

show_log() {  # file
  [[ -f $1 ]] || return 0
  printf -- '--- last lines of %s ---\n' "$1" >&2
  tail -n 25 "$1" >&2
}

# Runs a command that starts a daemon with no file descriptor above 2 open.
# The servers outlive this script: one started under
# `flock /tmp/liaison-mailstack.lock …` would otherwise inherit the lock's
# descriptor and hold the test lock for as long as it runs (every test
# waiting for it would hang).
without_inherited_fds() {
  (
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      [[ $fd -gt 2 && $fd != 255 ]] && eval "exec $fd>&-" 2>/dev/null
    done
    exec "$@"
  )
}

start_postfix() {
  postfix_running && return 0
  without_inherited_fds postfix -c "$PF_CONF" start </dev/null >>"$LOG_DIR/start.log" 2>&1 || {
    show_log "$LOG_DIR/start.log"; show_log "$LOG_DIR/postfix.log"
    # postfix prints its fatal errors only to a terminal (else to the log).
    if command -v script >/dev/null; then
      log "postfix check says:"
      script -qec "postfix -c '$PF_CONF' check" /dev/null </dev/null >&2 || true
    fi
    die "postfix failed to start"
  }
}

start_dovecot() {
  dovecot_running && return 0
  # A stale anvil-auth-penalty socket costs ~5 s at every start.
  rm -f "$DC_BASE/anvil-auth-penalty"
  without_inherited_fds dovecot -c "$DC_CONF" </dev/null >>"$LOG_DIR/start.log" 2>&1 || {
    show_log "$LOG_DIR/start.log"; show_log "$LOG_DIR/dovecot.log"
    die "dovecot failed to start"
  }
}

summary() {
  printf 'mailstack up: SMTP %s:%s, SMTPS %s:%s, submission %s:%s, IMAP %s:%s, IMAPS %s:%s; %d users (password %s, or an OAuth2 token); state %s\n' \
    "$BIND" "$SMTP_PORT" "$BIND" "$SMTPS_PORT" "$BIND" "$SUBMISSION_PORT" "$BIND" "$IMAP_PORT" "$BIND" "$IMAPS_PORT" "${#USERS[@]}" "$PASSWORD" "$MS_DIR"
}

do_up() {
  do_install
  if postfix_running && dovecot_running && greets "$SMTP_PORT" 220 && greets "$IMAP_PORT" '* OK' \
    && (exec 3<>"/dev/tcp/127.0.0.1/$SMTPS_PORT") 2>/dev/null && greets "$SUBMISSION_PORT" 220 \
    && [[ -S $DC_BASE/auth-client ]]; then
    summary; return 0
  fi
  write_config
  # A Dovecot started by an older version of this script lacks the OAuth2
  # passdb and the SASL socket: reload it with the configuration just written.
  if dovecot_running; then
    kill -HUP "$(dovecot_pid)" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do [[ -S $DC_BASE/auth-client ]] && break; sleep 0.05; done
  fi
  start_dovecot
  # A Postfix started by an older version of this script lacks listeners
  # added since: reload it with the configuration just written.
  if postfix_running; then
    without_inherited_fds postfix -c "$PF_CONF" reload </dev/null >>"$LOG_DIR/start.log" 2>&1 || true
  fi
  start_postfix
  local deadline=$((SECONDS + WAIT_SECONDS)) smtp=0 smtps=0 imap=0 imaps=0 i
  while (( SECONDS < deadline )); do
    (( smtp )) || { greets "$SMTP_PORT" 220 && greets "$SUBMISSION_PORT" 220 && smtp=1; } || true
    (( smtps )) || { (exec 3<>"/dev/tcp/127.0.0.1/$SMTPS_PORT") 2>/dev/null && smtps=1; } || true
    (( imap )) || { greets "$IMAP_PORT" '* OK' && imap=1; } || true
    (( imaps )) || { (exec 3<>"/dev/tcp/127.0.0.1/$IMAPS_PORT") 2>/dev/null && imaps=1; } || true
    (( smtp && smtps && imap && imaps )) && { summary; return 0; }
    sleep 0.1
  done
  (( smtp && smtps )) || { show_log "$LOG_DIR/start.log"; show_log "$LOG_DIR/postfix.log"; log "SMTP on $BIND:$SMTP_PORT/$SMTPS_PORT not ready within ${WAIT_SECONDS}s"; }
  (( imap && imaps )) || { show_log "$LOG_DIR/dovecot.log"; log "IMAP on $BIND:$IMAP_PORT/$IMAPS_PORT not ready within ${WAIT_SECONDS}s"; }
  exit 1
}

do_down() {
  need_root
  local ppid dpid i
  ppid=$(postfix_pid) || ppid=""
  dpid=$(dovecot_pid) || dpid=""
  if [[ -n $ppid ]]; then
    postfix -c "$PF_CONF" stop </dev/null >>"$LOG_DIR/start.log" 2>&1 || kill "$ppid" 2>/dev/null || true
  fi
  # Dovecot's master sleeps 1 s in its shutdown path; nothing to gain there.
  [[ -n $dpid ]] && { kill -TERM "$dpid" 2>/dev/null || true; }
  for ((i = 0; i < 150; i++)); do
    proc_alive "$ppid" || proc_alive "$dpid" || break
    sleep 0.05
  done
  proc_alive "$ppid" && die "postfix (pid $ppid) did not stop within 7 s"
  proc_alive "$dpid" && die "dovecot (pid $dpid) did not stop within 7 s"
  rm -f "$DC_BASE/anvil-auth-penalty"
  echo "mailstack down"
}

do_status() {
  local rc=0
  if postfix_running; then
    echo "postfix: running (pid $(postfix_pid)), SMTP $BIND:$SMTP_PORT"
  else
    echo "postfix: not running"; rc=1
  fi
  if dovecot_running; then
    echo "dovecot: running (pid $(dovecot_pid)), IMAP $BIND:$IMAP_PORT, IMAPS $BIND:$IMAPS_PORT"
  else
    echo "dovecot: not running"; rc=1
  fi
  echo "state: $MS_DIR"
  return $rc
}

case "${1:-}" in
  up) do_up ;;
  down) do_down ;;
  status) do_status ;;
  install) do_install ;;
  *) echo "usage: $0 up|down|status|install" >&2; exit 2 ;;
esac
