#!/usr/bin/env bash
# The API benchmark's PostgreSQL: install Debian's server if missing, start the cluster, make
# the role and database. Prints the DSN. `benchmarks/postgres.sh stop` stops the cluster again.
set -euo pipefail
if [ "${1:-}" = "stop" ]; then
  pg_ctlcluster "$(ls /usr/lib/postgresql | sort -V | tail -1)" main stop || true
  exit 0
fi
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -1)
pg_lsclusters -h | grep -q "^$version main" || pg_createcluster "$version" main >/dev/null
pg_ctlcluster "$version" main start 2>/dev/null || true
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='bench'\"" | grep -q 1 \
  || su postgres -c "psql -qc \"CREATE ROLE bench LOGIN PASSWORD 'bench'\""
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='bench'\"" | grep -q 1 \
  || su postgres -c "psql -qc 'CREATE DATABASE bench OWNER bench'"
port=$(pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $3}')
echo "postgresql://bench:bench@127.0.0.1:${port}/bench"
