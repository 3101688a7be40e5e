#!/usr/bin/env bash
# Runs the gateway on the default config (config/omnigate.toml: the embedded SQLite store,
# sandbox providers), after installing the proto compiler the build needs when it is
# missing (Debian; through sudo unless run as root). Arguments go to `omnigate serve`,
# such as `--config PATH`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v protoc >/dev/null; then
  if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" scripts/apt-install.sh protobuf-compiler libprotobuf-dev
fi
exec cargo run --release -- serve "$@"
