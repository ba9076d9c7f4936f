#!/usr/bin/env bash
# Makes the pgvector extension available to the local PostgreSQL (wharf's embeddings migration
# runs `CREATE EXTENSION IF NOT EXISTS vector`). Idempotent and quick when it is already there:
# it builds only when `CREATE EXTENSION vector` fails. The build (≈ 1 min) compiles pgvector
# from Debian's trixie source package against the server's major version, with a private apt
# state directory so the machine's apt configuration is untouched. Needs root (apt, make install).
#
#   scripts/install-pgvector.sh          # PGHOST/PGPORT/PGUSER as for psql; defaults below
set -euo pipefail

export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
log() { printf 'install-pgvector: %s\n' "$*" >&2; }

# DDL is transactional: this tries the extension without leaving anything behind.
available() {
    psql -X -q -d postgres -v ON_ERROR_STOP=1 -c 'BEGIN; CREATE EXTENSION IF NOT EXISTS vector; ROLLBACK;' \
        >/dev/null 2>&1
}

if available; then
    exit 0
fi

major="$(psql -X -tA -d postgres -c 'SHOW server_version_num' | cut -c1-2)"
pg_config="/usr/lib/postgresql/$major/bin/pg_config"
log "building pgvector for PostgreSQL $major"

apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
if ! apt_install "postgresql-server-dev-$major" build-essential dpkg-dev; then
    apt-get update -q >/dev/null
    apt_install "postgresql-server-dev-$major" build-essential dpkg-dev
fi

work="${PGVECTOR_BUILD_DIR:-/tmp/pgvector-build}"
rm -rf "$work/src"
mkdir -p "$work"/lists/partial "$work"/cache/archives/partial
# The first stanza of the machine's Debian sources (same mirror), retargeted to trixie sources.
awk 'BEGIN{RS="";ORS="\n\n"} NR==1' /etc/apt/sources.list.d/debian.sources \
    | sed -e 's/^Types:.*/Types: deb-src/' -e 's/^Suites:.*/Suites: trixie/' >"$work"/trixie-src.sources
apt_opts=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$work"
    -o Dir::State::Lists="$work"/lists -o Dir::Cache="$work"/cache)
apt-get "${apt_opts[@]}" update -q >/dev/null
(cd "$work" && rm -f pgvector_* && apt-get "${apt_opts[@]}" source --download-only pgvector >/dev/null)
(cd "$work" && dpkg-source -x --no-check pgvector_*.dsc src >/dev/null)
make -s -C "$work/src" PG_CONFIG="$pg_config" -j"$(nproc)" >/dev/null
make -s -C "$work/src" PG_CONFIG="$pg_config" install >/dev/null

if ! available; then
    log "pgvector was built but CREATE EXTENSION vector still fails"
    exit 1
fi
log "pgvector $(sed -n "s/^default_version = '\(.*\)'/\1/p" "$("$pg_config" --sharedir)/extension/vector.control") installed"
