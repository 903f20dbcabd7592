#!/usr/bin/env bash
# Installs the Debian packages the project builds with, only those missing. Idempotent.
set -euo pipefail
pkgs=(cmake g++ make clang-format libabsl-dev libprotobuf-dev protobuf-compiler libgtest-dev nlohmann-json3-dev
      libopenmpi-dev openmpi-bin python3-matplotlib libopenblas-dev libdnnl-dev
      libbenchmark-dev)
if [ "${MOE_SETUP_EXTRA:-}" = fuzz ]; then pkgs+=(clang libclang-rt-14-dev); fi
if [ "${MOE_SETUP_EXTRA:-}" = torch ]; then pkgs+=(python3-torch); fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "setup: installing ${missing[*]}" >&2
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
