#!/usr/bin/env bash
# Installs what the project needs on a fresh machine: uv, the Python environment from uv.lock,
# and the Debian servers the sandbox runs (MariaDB, Redis, PostgreSQL, Prometheus, HAProxy).
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
  echo "bootstrap: installing uv"
  python3 -m pip install --quiet uv
fi

missing=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/bin/prometheus ] || missing+=(prometheus)
[ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v postgres >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "bootstrap: installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
      apt-get update -q >/dev/null
      apt-get install -y -q "${missing[@]}" >/dev/null
    }
    # The Debian packages start system services; the sandbox runs its own instances.
    for svc in prometheus prometheus-node-exporter haproxy postgresql; do
      if command -v systemctl >/dev/null 2>&1; then systemctl disable --now "$svc" >/dev/null 2>&1 || true; fi
    done
  else
    echo "bootstrap: missing ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

uv sync --frozen --quiet
