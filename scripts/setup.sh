#!/usr/bin/env bash
# Install everything uetrace and its tests need on a fresh Debian 12 machine (run as root).
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(libbpf1 clang llvm libbpf-dev bpftool linux-perf tcpdump tshark iproute2 util-linux gcc g++ make wrk
              nginx curl openssl openjdk-17-jre-headless chromium chromium-driver age)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # nginx is a test fixture run by the tests themselves: keep apt from starting it as a service.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && own_policy=1
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi
fi

# Tracepoints are resolved through tracefs; the capture mounts it too, but tests use it directly.
if [ ! -d /sys/kernel/tracing/events ]; then
  mount -t tracefs nodev /sys/kernel/tracing || true
fi

python3 -m pip install -q --disable-pip-version-check -e ".[test]"
