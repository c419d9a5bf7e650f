#!/usr/bin/env bash
# Installs what forge needs on Debian 12 (run as root, or with sudo available): the C++
# dependencies from Debian's packages and python3-venv for the test-time reference tools.
# Packages already present are left alone, so a prepared machine needs no network here.
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config git
      libxtensor-dev xtl-dev libxsimd-dev libeigen3-dev libboost-dev librange-v3-dev catch2
      nlohmann-json3-dev libsodium-dev libpcre2-dev libutf8proc-dev libsentencepiece-dev
      libyaml-cpp-dev libcli11-dev libbenchmark-dev libomp-dev libopenmpi-dev openmpi-bin
      python3 python3-venv python3-pip)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "forge setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
