#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 with trust auth and a database
# `test`, which the PostgreSQL ledger tests use (one schema per test, dropped after). Quick
# when one already answers. On a fresh Debian or Ubuntu machine it installs Debian's
# `postgresql`, trusts local TCP connections on its cluster and starts it.
set -euo pipefail

if [ -n "${TOLLGATE_TEST_POSTGRES:-}" ]; then
    exit 0 # the tests use the server named there
fi

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
answers() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
has_test_db() {
    psql -h 127.0.0.1 -p 5432 -U postgres -d test -Atc 'SELECT 1' >/dev/null 2>&1
}

if ! command -v pg_isready >/dev/null 2>&1 || ! answers; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        echo "tests/postgres/setup.sh: installing PostgreSQL (Debian's postgresql package)" >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client
    fi
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    if [ -z "$version" ]; then
        as_root pg_createcluster --start-conf=manual "$(ls /usr/lib/postgresql | sort -V | tail -n 1)" main
        version=$(ls /etc/postgresql | sort -V | tail -n 1)
    fi
    hba=/etc/postgresql/$version/main/pg_hba.conf
    # Trust TCP connections from this machine only: the tests connect as `postgres`.
    if ! as_root grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
        as_root sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    fi
    as_root pg_ctlcluster "$version" main start 2>/dev/null || as_root pg_ctlcluster "$version" main reload
    for _ in $(seq 1 60); do answers && break; sleep 0.5; done
    if ! answers; then
        echo "tests/postgres/setup.sh: PostgreSQL $version did not start; see /var/log/postgresql/" >&2
        exit 1
    fi
fi

if ! has_test_db; then
    psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -Atqc 'CREATE DATABASE test' >/dev/null
fi
if ! has_test_db; then
    echo "tests/postgres/setup.sh: PostgreSQL answers on 127.0.0.1:5432, but not as user postgres with trust auth to database test; allow it in pg_hba.conf, or set TOLLGATE_TEST_POSTGRES to a server the tests may use" >&2
    exit 1
fi
