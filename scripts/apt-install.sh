#!/usr/bin/env bash
# Installs Debian packages for the build or the tests, as root: from the package lists as
# they are, or after refreshing them when that fails. Services the packages bring do not
# start with their stock configs (Dovecot would take the IMAP ports): the mail and
# PostgreSQL scripts start them, configured.
set -euo pipefail

policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
  trap 'rm -f "$policy"' EXIT
fi
# Postfix asks how to configure itself; scripts/mail-servers.sh writes its own config.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
install "$@" || { apt-get update -qq && install "$@"; }
