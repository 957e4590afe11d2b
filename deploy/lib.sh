#!/usr/bin/env bash
# Helpers shared by the scripts in deploy/. Sourced, never run:
#
#   # shellcheck source=deploy/lib.sh
#   . "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"
#
# Defines REPO (the repository root, whatever the caller's cwd), TARGET_DIR
# (cargo's target directory), RELEASE_BIN (the release binary in it),
# STATE_ROOT (the state directories of deploy/local-server), PROG (the calling script's name, for messages) and
# the functions below. Progress lines (step) go to stdout unless the caller
# sets STEP_FD=2 first; errors and warnings always go to stderr.

REPO="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
STATE_ROOT="$REPO/target/local-server"
PROG="$(basename "${BASH_SOURCE[-1]}")"

# ---------------------------------------------------------------- messages

step() { printf '==> %s\n' "$*" >&"${STEP_FD:-1}"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

# The comment block at the top of the calling script, from its second line
# to the line before `set -euo pipefail`, without the leading "# ".
usage_from_header() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[-1]}" | sed '$d; s/^# \{0,1\}//'
}

# require_command NAME HINT: dies with HINT when NAME is not on PATH.
require_command() {
    command -v "$1" >/dev/null 2>&1 || die "$2"
}

# wait_until TRIES INTERVAL COMMAND...: runs COMMAND up to TRIES times,
# INTERVAL seconds apart, until it succeeds.
wait_until() {
    local tries="$1" interval="$2"
    shift 2
    for _ in $(seq 1 "$tries"); do
        "$@" && return 0
        sleep "$interval"
    done
    return 1
}

# ---------------------------------------------------------------- ports, HTTP

port_is_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# spare_port FROM: the first port from FROM on (within 200) that nothing
# listens on and no local-server state directory claims.
spare_port() {
    local port
    for port in $(seq "$1" $(($1 + 200))); do
        if port_is_free "$port" && [ ! -e "$STATE_ROOT/$port/httpd.pid" ]; then
            printf '%s\n' "$port"
            return
        fi
    done
    die "no free port from $1"
}

# http_status PORT PATH: the status code of one GET to 127.0.0.1:PORT, with
# bash's /dev/tcp (curl may be absent); prints nothing when nothing answers.
http_status() {
    # shellcheck disable=SC2016 # expanded by the inner bash, from its arguments
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" "$2" >&3
        IFS=" " read -r _ code _ <&3 && printf "%s\n" "$code"
    ' _ "$1" "$2" 2>/dev/null
}

# wait_for_http PORT PATH TRIES INTERVAL [PID]: prints the status code of the
# first answer to GET PATH; fails after TRIES attempts, or as soon as the
# process PID (when given) has exited.
wait_for_http() {
    local port="$1" path="$2" tries="$3" interval="$4" pid="${5:-}" code
    for _ in $(seq 1 "$tries"); do
        code="$(http_status "$port" "$path" || true)"
        if [ -n "$code" ]; then
            printf '%s\n' "$code"
            return 0
        fi
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        sleep "$interval"
    done
    return 1
}

# ---------------------------------------------------------------- MariaDB

mysql_client() {
    if command -v mariadb >/dev/null 2>&1; then
        mariadb "$@"
    else
        mysql "$@"
    fi
}

mariadb_reachable() {
    mysqladmin -h127.0.0.1 -P3306 -uroot --connect-timeout=2 ping >/dev/null 2>&1
}

# ensure_mariadb [PREFIX]: starts the installed MariaDB server unless
# 127.0.0.1:3306 already answers, and waits up to 30 s for it (starting it
# needs root). PREFIX starts each message (e.g. "deps: ").
ensure_mariadb() {
    local prefix="${1:-}"
    if mariadb_reachable; then
        step "${prefix}MariaDB answers on 127.0.0.1:3306"
        return
    fi
    [ "$(id -u)" = 0 ] || die "${prefix}MariaDB is not reachable on 127.0.0.1:3306 and starting it needs root"
    step "${prefix}starting MariaDB"
    mkdir -p /run/mysqld
    chown mysql:mysql /run/mysqld
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    wait_until 60 0.5 mariadb_reachable || die "${prefix}MariaDB did not answer on 127.0.0.1:3306 within 30 s"
    step "${prefix}MariaDB answers on 127.0.0.1:3306"
}

# ---------------------------------------------------------------- the binary

# Where cargo_build_release leaves the binary.
RELEASE_BIN="$TARGET_DIR/release/healthsync"

# cargo_build_release [--features LIST]: the release build of this tree,
# to RELEASE_BIN.
cargo_build_release() {
    step "building healthsync (cargo build --release${*:+ $*})"
    (cd "$REPO" && cargo build --release --quiet "$@") || die "cargo build failed"
    [ -x "$RELEASE_BIN" ] || die "cargo build left no $RELEASE_BIN"
}

# binary_has_test_hooks BIN: whether BIN was built with the test-hooks
# feature, asked the way a client would: one CGI request for the test-only
# route /api/__test/echo (200 with the hooks, 404 without), run directly
# with a throwaway configuration (the route touches no database). Fails,
# printing the answer, when BIN answers neither.
binary_has_test_hooks() {
    local out status
    out="$(env -i PATH="$PATH" GATEWAY_INTERFACE=CGI/1.1 SERVER_PROTOCOL=HTTP/1.1 \
        REQUEST_METHOD=GET REQUEST_URI=/api/__test/echo SCRIPT_NAME=/healthsync.cgi \
        REMOTE_ADDR=127.0.0.1 HTTP_HOST=127.0.0.1 DB_HOST=127.0.0.1 DB_NAME=healthsync_probe \
        DB_USER=root JWT_SECRET_KEY=probe-0nly-Kq3vX8mW2rT6yB9nL4hJ7dF1gS5zC \
        REQUIRE_HTTPS=false LOG_LEVEL=error "$1" </dev/null 2>/dev/null)" || true
    status="$(sed -n '1s/^Status: \([0-9]*\).*/\1/p' <<<"$out")"
    case "$status" in
        200) return 0 ;;
        404) return 1 ;;
    esac
    printf '%s\n' "$out" | head -n 12 >&2
    die "$1 answered neither 200 nor 404 to GET /api/__test/echo as CGI: is it healthsync?"
}

# ---------------------------------------------------------------- instances

# instance_pids DOCROOT [GLOB]: pids of the processes running a binary from
# a local-server document root whose name matches GLOB (default
# healthsync.*): its FastCGI workers, or CGI requests in flight.
instance_pids() {
    local docroot="$1" glob="${2:-healthsync.*}" exe p
    for p in /proc/[0-9]*; do
        exe="$(readlink "$p/exe" 2>/dev/null)" || continue
        # shellcheck disable=SC2254 # GLOB is a pattern on purpose
        case "$exe" in
            "$docroot"/$glob) printf '%s\n' "${p#/proc/}" ;;
        esac
    done
}
