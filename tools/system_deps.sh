#!/usr/bin/env bash
# Debian packages the Python wheels need but do not ship: open3d loads libusb-1.0.so.0; the ROS
# message packages that have no wheels (tools/build_interfaces.py) need cmake and a C/C++ compiler.
set -euo pipefail
missing=()
ldconfig -p | grep -q 'libusb-1.0.so.0' || missing+=(libusb-1.0-0)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
elif command -v sudo >/dev/null 2>&1; then
  sudo apt-get update -qq
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "error: x23d_ros needs the Debian packages ${missing[*]}; install them as root: apt-get install ${missing[*]}" >&2
  exit 1
fi
