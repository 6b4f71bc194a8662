#!/usr/bin/env bash
# Install the Debian packages a target needs, when they are missing and we are root.
# Usage: scripts/system-deps.sh base|test|bench
# Not root: print what is missing and go on; tests that need a tool skip (or fail under CI=true).
set -euo pipefail

case "${1:-test}" in
  base)  want=(nft:nftables) ;;   # the L4 tier's data plane (balancer.cluster.l4)
  test)  want=(nft:nftables curl:curl wrk:wrk iperf3:iperf3 chromium:chromium nginx:nginx openssl:openssl haproxy:haproxy
         promtool:prometheus bird:bird2 dig:bind9-dnsutils slowhttptest:slowhttptest keepalived:keepalived h2load:nghttp2-client) ;;   # bird: the router of the [bgp] tests; dig: [dns]; keepalived: [vrrp]; h2load, nghttp: HTTP/2 clients
  bench) want=(wrk:wrk haproxy:haproxy nginx:nginx curl:curl dnsperf:dnsperf nsd:nsd iperf3:iperf3 openssl:openssl perf:linux-perf) ;;
  *) echo "usage: $0 base|test|bench" >&2; exit 2 ;;
esac

missing=()
# The interpreter the Makefile makes .venv with (its PYTHON).
python=${PYTHON:-python3}
# Debian splits venv/ensurepip out of python3: without it `python3 -m venv` fails.
"$python" -c "import ensurepip" >/dev/null 2>&1 || missing+=(python3-venv)
# mypyc compiles the data plane (setup.py): a C compiler and Python's headers. Without them
# the install still works, interpreted and slower.
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
[ -f "$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] || missing+=(python3-dev)
# TLS termination calls OpenSSL from C (src/balancer/net/_tls.c): OpenSSL's headers.
[ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
for item in "${want[@]}"; do
  cmd=${item%%:*}; pkg=${item#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "missing Debian packages (not root, not installing): ${missing[*]}" >&2
  echo "  install them with: sudo apt-get install ${missing[*]}" >&2
fi
