#!/usr/bin/env bash
# Makes a CA, a server certificate for localhost and 127.0.0.1, and a client certificate
# in DIR (once), so that test servers speak verified TLS and no key is ever committed.
#   scripts/test-certs.sh DIR "CA name"
#     ->  DIR/ca.pem, DIR/server.pem, DIR/server.key, DIR/client.pem, DIR/client.key
set -euo pipefail
DIR=$1
NAME=${2:-omnigate test CA}
mkdir -p "$DIR"
if [ ! -f "$DIR/server.pem" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$NAME" \
    -keyout "$DIR/ca.key" -out "$DIR/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$DIR/server.key" -out "$DIR/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$DIR/ext.cnf"
  openssl x509 -req -in "$DIR/server.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" \
    -CAcreateserial -days 3650 -extfile "$DIR/ext.cnf" -out "$DIR/server.pem" 2>/dev/null
fi
if [ ! -f "$DIR/client.pem" ]; then
  openssl req -newkey rsa:2048 -nodes -subj "/CN=omnigate test client" \
    -keyout "$DIR/client.key" -out "$DIR/client.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' >"$DIR/client-ext.cnf"
  openssl x509 -req -in "$DIR/client.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" \
    -CAcreateserial -days 3650 -extfile "$DIR/client-ext.cnf" -out "$DIR/client.pem" 2>/dev/null
fi
chmod 644 "$DIR/server.pem" "$DIR/ca.pem"
