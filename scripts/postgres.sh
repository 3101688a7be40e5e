#!/usr/bin/env bash
# Starts Debian's PostgreSQL cluster on loopback with a role that may create databases
# (each test makes its own), as the tests expect by default:
#   postgres://omnigate:omnigate@127.0.0.1:5432/postgres   (override: OMNIGATE_TEST_POSTGRES)
set -euo pipefail

version=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | grep -q "^$version main"; then
  pg_createcluster "$version" main >/dev/null
fi
# TLS with a certificate for localhost and 127.0.0.1 from a CA made here (no key is
# committed); the tests trust $DIR/ca.pem to check that TLS connections are verified.
DIR=/var/lib/omnigate-test-pg
"$(dirname "$0")/test-certs.sh" "$DIR" "omnigate test PostgreSQL CA"
chown postgres "$DIR/server.key" && chmod 600 "$DIR/server.key"

# Durable as in production (fsync and synchronous commit on), so the load generator's
# numbers mean something; loopback only.
conf=/etc/postgresql/$version/main/conf.d/omnigate-test.conf
mkdir -p "$(dirname "$conf")"
cat >"$conf" <<CONF
listen_addresses = '127.0.0.1'
ssl = on
ssl_cert_file = '$DIR/server.pem'
ssl_key_file = '$DIR/server.key'
CONF
pg_ctlcluster "$version" main restart </dev/null >/dev/null 2>&1 || pg_ctlcluster "$version" main start </dev/null >/dev/null 2>&1
for _ in $(seq 1 50); do
  pg_isready -h 127.0.0.1 -q && break
  sleep 0.2
done
pg_isready -h 127.0.0.1 || { tail -n 50 /var/log/postgresql/postgresql-"$version"-main.log; exit 1; }
su postgres -c "psql -q -v ON_ERROR_STOP=1" <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'omnigate') THEN
    CREATE ROLE omnigate LOGIN PASSWORD 'omnigate' CREATEDB;
  END IF;
END $$;
SQL
echo "postgresql $version up on 127.0.0.1:5432 (role omnigate; TLS CA $DIR/ca.pem)"
