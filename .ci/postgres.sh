#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests marked `postgres` (and for experiments/bench_workers.py).
#
#   source .ci/postgres.sh start   # exports ROOFNAS_TEST_POSTGRES_URL (and ROOFNAS_PG_*)
#   bash .ci/postgres.sh stop      # stops it and removes its data directory
#   bash .ci/postgres.sh start     # same, and prints the URL on stdout
#
# start: installs PostgreSQL from the system's packages when it is missing (Debian's `postgresql`,
# skipped when ROOFNAS_PG_NO_INSTALL=1), initialises a cluster in a temporary data directory
# owned by an unprivileged user (CI runs as root and postgres refuses to run as root), starts it on
# 127.0.0.1 on a free port with trust authentication, creates the database `roofnas`, and writes
# `export ...` lines to $ROOFNAS_PG_ENV_FILE (default ${TMPDIR:-/tmp}/roofnas-postgres.env).
# When PostgreSQL cannot be installed or started it prints an ERROR line with the reason on
# stderr, leaves ROOFNAS_TEST_POSTGRES_URL unset, records the reason in ROOFNAS_PG_SKIP_REASON
# and fails (exit status 1; sourced, it returns 1 but never aborts the caller). The tests marked
# `postgres` then skip with that reason, and tests/conftest.py turns each such skip into an error
# when CI or ROOFNAS_REQUIRE_SERVICES is set, unless ROOFNAS_ALLOW_SERVICE_SKIP=postgres says
# that the server is unavailable on purpose.
#
# The data directory is throwaway, so fsync is off (per-test CREATE DATABASE is then fast);
# ROOFNAS_PG_DURABLE=1 keeps the server's default durability (for benchmarks).

_roofnas_pg_log() { echo "postgres.sh: $*" >&2; }

# Says loudly that no server is running and why (the reason is in ROOFNAS_PG_SKIP_REASON).
_roofnas_pg_failed() {
    export ROOFNAS_PG_SKIP_REASON
    _roofnas_pg_log "ERROR: no PostgreSQL server: $ROOFNAS_PG_SKIP_REASON"
    _roofnas_pg_log "ERROR: tests marked postgres will skip, which fails a CI run (CI or" \
        "ROOFNAS_REQUIRE_SERVICES set) unless ROOFNAS_ALLOW_SERVICE_SKIP=postgres"
    return 1
}

_roofnas_pg_bindir() {
    # The Debian layout puts the server programs outside PATH, one folder per major version.
    local d
    if command -v pg_config >/dev/null 2>&1; then
        d="$(pg_config --bindir 2>/dev/null || true)"
        if [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" ]]; then echo "$d"; return 0; fi
    fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then echo "$d"; return 0; fi
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"; return 0
    fi
    return 1
}

_roofnas_pg_install() {
    if [[ "${ROOFNAS_PG_NO_INSTALL:-0}" == "1" ]]; then
        _roofnas_pg_log "PostgreSQL server programs not found and ROOFNAS_PG_NO_INSTALL=1"
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        _roofnas_pg_log "PostgreSQL server programs not found and no apt-get to install them"
        return 1
    fi
    if [[ "$(id -u)" != "0" ]]; then
        _roofnas_pg_log "PostgreSQL server programs not found; installing them needs root"
        return 1
    fi
    _roofnas_pg_log "installing PostgreSQL from the system's packages (apt-get install postgresql)"
    # policy-rc.d: do not let the package start its own cluster as a service.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
    fi
    local ok=0
    if DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            postgresql >&2; then
        ok=1
    fi
    if [[ "$created_policy" == "1" ]]; then rm -f "$policy"; fi
    [[ "$ok" == "1" ]]
}

_roofnas_pg_free_port() {
    local py
    for py in python3 python; do
        if command -v "$py" >/dev/null 2>&1; then
            "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
            return $?
        fi
    done
    echo $(( 20000 + RANDOM % 20000 ))
}

# Runs a command as $ROOFNAS_PG_USER (the unprivileged owner of the cluster) or as is when not root.
_roofnas_pg_as_user() {
    if [[ "$(id -u)" == "0" ]]; then
        # From /: the caller's directory (e.g. /root) may be unreadable to that user.
        (cd / && runuser -u "$ROOFNAS_PG_USER" -- "$@")
    else
        "$@"
    fi
}

_roofnas_pg_start() {
    unset ROOFNAS_TEST_POSTGRES_URL
    local env_file="${ROOFNAS_PG_ENV_FILE:-${TMPDIR:-/tmp}/roofnas-postgres.env}"
    rm -f "$env_file"
    local bindir
    if ! bindir="$(_roofnas_pg_bindir)"; then
        if ! _roofnas_pg_install || ! bindir="$(_roofnas_pg_bindir)"; then
            ROOFNAS_PG_SKIP_REASON="PostgreSQL server programs (initdb, pg_ctl) are not installed"
            _roofnas_pg_failed
            return 1
        fi
    fi

    ROOFNAS_PG_USER="$(id -un)"
    if [[ "$(id -u)" == "0" ]]; then
        # postgres refuses to run as root: use the package's `postgres` user, else make one.
        if getent passwd postgres >/dev/null 2>&1; then
            ROOFNAS_PG_USER=postgres
        elif getent passwd roofnas-pg >/dev/null 2>&1 \
            || useradd --system --no-create-home --shell /usr/sbin/nologin roofnas-pg >&2; then
            ROOFNAS_PG_USER=roofnas-pg
        else
            ROOFNAS_PG_SKIP_REASON="running as root and no unprivileged user to run postgres"
            _roofnas_pg_failed
            return 1
        fi
    fi

    local data port
    data="$(mktemp -d "${TMPDIR:-/tmp}/roofnas-pg.XXXXXX")"
    chmod 700 "$data"
    if [[ "$(id -u)" == "0" ]]; then chown "$ROOFNAS_PG_USER" "$data"; fi
    port="$(_roofnas_pg_free_port)"

    local opts="-c listen_addresses=127.0.0.1 -p $port -k $data -c max_connections=200"
    if [[ "${ROOFNAS_PG_DURABLE:-0}" != "1" ]]; then
        opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    fi
    if ! _roofnas_pg_as_user "$bindir/initdb" -D "$data/db" -U postgres -A trust -E UTF8 \
            --no-sync >"$data/initdb.log" 2>&1; then
        ROOFNAS_PG_SKIP_REASON="initdb failed: $(tail -n 2 "$data/initdb.log" 2>/dev/null | tr '\n' ' ')"
    elif ! _roofnas_pg_as_user "$bindir/pg_ctl" -D "$data/db" -o "$opts" -l "$data/server.log" \
            -w -t 60 start >&2; then
        ROOFNAS_PG_SKIP_REASON="pg_ctl start failed: $(tail -n 3 "$data/server.log" 2>/dev/null | tr '\n' ' ')"
    elif ! "$bindir/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres \
            -c "CREATE DATABASE roofnas" >&2; then
        ROOFNAS_PG_SKIP_REASON="CREATE DATABASE failed on 127.0.0.1:$port"
    else
        ROOFNAS_PG_SKIP_REASON=""
    fi
    ROOFNAS_PG_DATA="$data"
    ROOFNAS_PG_BINDIR="$bindir"
    export ROOFNAS_PG_DATA ROOFNAS_PG_BINDIR ROOFNAS_PG_USER ROOFNAS_PG_SKIP_REASON
    if [[ -n "$ROOFNAS_PG_SKIP_REASON" ]]; then
        _roofnas_pg_stop
        _roofnas_pg_failed
        return 1
    fi
    ROOFNAS_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$port/roofnas"
    export ROOFNAS_TEST_POSTGRES_URL
    {
        echo "export ROOFNAS_TEST_POSTGRES_URL='$ROOFNAS_TEST_POSTGRES_URL'"
        echo "export ROOFNAS_PG_DATA='$ROOFNAS_PG_DATA'"
        echo "export ROOFNAS_PG_BINDIR='$ROOFNAS_PG_BINDIR'"
        echo "export ROOFNAS_PG_USER='$ROOFNAS_PG_USER'"
    } >"$env_file"
    _roofnas_pg_log "PostgreSQL on $ROOFNAS_TEST_POSTGRES_URL (data $data; env in $env_file)"
    return 0
}

_roofnas_pg_stop() {
    local env_file="${ROOFNAS_PG_ENV_FILE:-${TMPDIR:-/tmp}/roofnas-postgres.env}"
    if [[ -z "${ROOFNAS_PG_DATA:-}" && -f "$env_file" ]]; then
        # shellcheck disable=SC1090
        source "$env_file"
    fi
    local data="${ROOFNAS_PG_DATA:-}"
    if [[ -z "$data" ]]; then
        _roofnas_pg_log "stop: no server recorded (ROOFNAS_PG_DATA unset, no $env_file)"
        return 0
    fi
    if [[ -f "$data/db/postmaster.pid" && -n "${ROOFNAS_PG_BINDIR:-}" ]]; then
        _roofnas_pg_as_user "$ROOFNAS_PG_BINDIR/pg_ctl" -D "$data/db" -m immediate -w stop \
            >&2 || _roofnas_pg_log "stop: pg_ctl stop failed"
    fi
    case "$data" in
        "${TMPDIR:-/tmp}"/roofnas-pg.*) rm -rf "$data" ;;
        *) _roofnas_pg_log "stop: not removing unexpected data dir $data" ;;
    esac
    rm -f "$env_file"
    unset ROOFNAS_TEST_POSTGRES_URL ROOFNAS_PG_DATA ROOFNAS_PG_BINDIR ROOFNAS_PG_USER
    return 0
}

_roofnas_pg_main() {
    case "${1:-}" in
        start) _roofnas_pg_start ;;
        stop) _roofnas_pg_stop ;;
        *)
            echo "usage: source .ci/postgres.sh start | bash .ci/postgres.sh stop" >&2
            return 2
            ;;
    esac
}

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    # Sourced (from .ci/run under `set -euo pipefail`): never abort the caller; it reads
    # ROOFNAS_PG_SKIP_REASON, and the postgres tests fail under CI unless allowed to skip.
    _roofnas_pg_main "$@" || true
else
    set -uo pipefail
    _roofnas_pg_main "$@"
    rc=$?
    if [[ "${1:-}" == "start" && -n "${ROOFNAS_TEST_POSTGRES_URL:-}" ]]; then
        echo "$ROOFNAS_TEST_POSTGRES_URL"
    fi
    exit "$rc"
fi
