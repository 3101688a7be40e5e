#!/usr/bin/env bash
# Starts the real mail servers the email tests use, on loopback only: Postfix for SMTP
# submission (587 STARTTLS, 465 implicit TLS, SASL via Dovecot) and Dovecot for IMAP (143
# STARTTLS, 993 implicit TLS). Run as root on a Debian machine with postfix and
# dovecot-imapd installed; .ci/run does. Idempotent: a second run restarts both.
#
# Every user at omnigate.test and example.test exists, password "omnigate", so each test
# takes addresses of its own and tests do not see each other's mail. Mail to bounce.test is
# accepted and then bounced (a DSN back to the sender's mailbox); mail to tempfail.test is
# refused with 450 4.2.0. The test CA is written to $DIR/ca.pem.
set -euo pipefail

DIR=${OMNIGATE_MAIL_DIR:-/var/lib/omnigate-test-mail}
MAILDIRS=$DIR/vhosts
mkdir -p "$DIR" "$MAILDIRS"

getent group vmail >/dev/null || groupadd -g 5000 vmail
getent passwd vmail >/dev/null || useradd -u 5000 -g vmail -d "$MAILDIRS" -s /usr/sbin/nologin vmail
chown -R vmail:vmail "$MAILDIRS"

# A CA and a server certificate for localhost and 127.0.0.1, made here so no key is committed.
"$(dirname "$0")/test-certs.sh" "$DIR" "omnigate test CA"

# Dovecot: its own config file, so the system's is left alone.
cat >"$DIR/dovecot.conf" <<EOF
protocols = imap
listen = 127.0.0.1
base_dir = /run/omnigate-dovecot
log_path = $DIR/dovecot.log
ssl = yes
ssl_cert = <$DIR/server.pem
ssl_key = <$DIR/server.key
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:$MAILDIRS/%d/%n
mail_uid = vmail
mail_gid = vmail
first_valid_uid = 5000
passdb {
  driver = static
  args = password=omnigate
}
userdb {
  driver = static
  args = uid=vmail gid=vmail home=$MAILDIRS/%d/%n
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = 143
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = 993
    ssl = yes
  }
}
service auth {
  unix_listener /var/spool/postfix/private/auth {
    mode = 0660
    user = postfix
    group = postfix
  }
}
protocol lda {
  log_path = /dev/stderr
}
protocol imap {
  imap_idle_notify_interval = 1 secs
}
EOF
mkdir -p /var/spool/postfix/private
chown postfix:postfix /var/spool/postfix/private 2>/dev/null || true
doveadm -c "$DIR/dovecot.conf" stop 2>/dev/null || true
# A system Dovecot that the package install started would hold the IMAP ports.
pkill -x dovecot 2>/dev/null && sleep 1 || true
dovecot -c "$DIR/dovecot.conf" </dev/null >/dev/null 2>&1

# Postfix: virtual mailboxes for the two test domains, nothing leaves the machine.
cat >/etc/postfix/main.cf <<'EOF'
queue_directory = /var/spool/postfix
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
data_directory = /var/lib/postfix
mail_owner = postfix
setgid_group = postdrop
EOF
cat >/etc/postfix/vmailbox.regexp <<'EOF'
/@(omnigate|example)\.test$/ OK
EOF
cat >/etc/postfix/transport <<'EOF'
bounce.test nouser:
EOF
cat >/etc/postfix/recipient_access <<'EOF'
tempfail.test 450 4.2.0 Mailbox busy, try again later
unknown.test 550 5.1.1 User unknown in virtual mailbox table
EOF
postmap /etc/postfix/transport /etc/postfix/recipient_access
postconf -e \
  "myhostname = mail.omnigate.test" \
  "mydomain = omnigate.test" \
  "myorigin = omnigate.test" \
  "mydestination = localhost" \
  "inet_interfaces = loopback-only" \
  "inet_protocols = ipv4" \
  "compatibility_level = 3.6" \
  "maillog_file = $DIR/postfix.log" \
  "alias_maps = " \
  "alias_database = " \
  "relayhost = " \
  "virtual_mailbox_domains = omnigate.test, example.test" \
  "recipient_delimiter = +" \
  "virtual_transport = dovecot" \
  "dovecot_destination_recipient_limit = 1" \
  "virtual_mailbox_maps = regexp:/etc/postfix/vmailbox.regexp" \
  "transport_maps = hash:/etc/postfix/transport" \
  "smtpd_tls_cert_file = $DIR/server.pem" \
  "smtpd_tls_key_file = $DIR/server.key" \
  "smtpd_tls_security_level = may" \
  "smtpd_sasl_type = dovecot" \
  "smtpd_sasl_path = private/auth" \
  "smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination" \
  "smtpd_recipient_restrictions = check_recipient_access hash:/etc/postfix/recipient_access" \
  "bounce_queue_lifetime = 0" \
  "maximal_queue_lifetime = 1h" \
  "delay_warning_time = 0"
# Delivery through Dovecot's LDA, so Dovecot alone knows the maildir layout; "nouser"
# accepts and then bounces, as a real mailbox that does not exist would.
postconf -M dovecot/unix="dovecot unix - n n - - pipe flags=DRhu user=vmail:vmail argv=/usr/lib/dovecot/dovecot-lda -c $DIR/dovecot.conf -f \${sender} -d \${user}@\${nexthop}"
postconf -M nouser/unix="nouser unix - n n - - pipe user=nobody argv=/bin/sh -c { exit 67 }"
postconf -M submission/inet="submission inet n - n - - smtpd"
postconf -P "submission/inet/syslog_name=postfix/submission" \
  "submission/inet/smtpd_tls_security_level=encrypt" \
  "submission/inet/smtpd_sasl_auth_enable=yes" \
  "submission/inet/smtpd_client_restrictions=permit_sasl_authenticated,reject"
postconf -M smtps/inet="smtps inet n - n - - smtpd"
postconf -P "smtps/inet/syslog_name=postfix/smtps" \
  "smtps/inet/smtpd_tls_wrappermode=yes" \
  "smtps/inet/smtpd_sasl_auth_enable=yes" \
  "smtps/inet/smtpd_client_restrictions=permit_sasl_authenticated,reject"
postfix check
postfix stop 2>/dev/null || true
postfix start </dev/null >/dev/null 2>&1

# Both answer before this script returns, or it fails with their logs.
for port in 587 465 143 993; do
  up=no
  for _ in $(seq 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then up=yes; break; fi
    sleep 0.1
  done
  if [ "$up" = no ]; then
    echo "port $port does not answer" >&2
    tail -20 "$DIR/dovecot.log" "$DIR/postfix.log" >&2 2>/dev/null || true
    exit 1
  fi
done
echo "mail servers up: submission 587, smtps 465, imap 143, imaps 993; CA $DIR/ca.pem"
