#!/usr/bin/env bash
# Makes sure the tools of the registry tests are installed: Debian's docker-registry (the registry
# the tests start on free 127.0.0.1 ports, see test/support/registry.ts) and htpasswd (apache2-utils).
# The registries themselves are started and stopped by the tests; nothing is left running.
set -euo pipefail

need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v htpasswd >/dev/null || need+=(apache2-utils)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "test-registry: ${need[*]} missing; install them (apt-get install ${need[*]}) or run this script as root." >&2
  exit 1
fi
printf 'test-registry: installing %s\n' "${need[*]}" >&2
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
