#!/usr/bin/env bash
# The test command. On Debian, installs what the tests need when it is missing (the proto
# compiler, Postfix, Dovecot, PostgreSQL, openssl), starts the real mail servers and
# PostgreSQL on loopback (scripts/mail-servers.sh, scripts/postgres.sh; root's work, so
# through sudo unless run as root), then runs every test. Arguments go to `cargo test`.
# With OMNIGATE_TEST_POSTGRES set, the tests use that server and none is started here.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v protoc >/dev/null || missing+=(protobuf-compiler libprotobuf-dev)
command -v openssl >/dev/null || missing+=(openssl)
[ -x /usr/sbin/postfix ] || missing+=(postfix)
[ -x /usr/sbin/dovecot ] || missing+=(dovecot-imapd)
[ -n "${OMNIGATE_TEST_POSTGRES:-}" ] || command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
if ((${#missing[@]})); then
  echo "installing ${missing[*]}"
  as_root scripts/apt-install.sh "${missing[@]}"
fi

as_root scripts/mail-servers.sh
[ -n "${OMNIGATE_TEST_POSTGRES:-}" ] || as_root scripts/postgres.sh
cargo test --workspace --locked "$@"
