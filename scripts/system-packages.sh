#!/usr/bin/env bash
# Installs the Debian packages OpenBWV needs, only when they are missing, so
# that a second run costs nothing. With --bench, also what the benchmarks
# measure against (the ffmpeg CLI, openssl).
set -euo pipefail

need=()
want() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || need+=("$1"); }

want openssl
want libasound2-dev   # simpleaudio compiles against ALSA
want xvfb             # a virtual display, so the emulated camera's window is tested too
want ffmpeg           # ffprobe/ffmpeg: the tests check opened and exported video with an independent tool
want chromium         # the browser the web application's tests drive (Playwright, system browser)
want nodejs            # node and npm: npm ci installs the web application's pinned browser assets (package-lock.json)
command -v npm >/dev/null || want npm   # some nodejs builds ship npm inside, Debian's does not
want postgresql-15    # the fleet metadata engine; the tests start their own cluster on loopback
want ceph-mon; want ceph-osd; want radosgw; want ceph-common   # S3 Object Lock, started by the tests
want haproxy          # the real load balancer in front of several server nodes
want espeak-ng        # speech for the emulated microphone
want sox              # measures and converts audio in the tests

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "system-packages: missing Debian packages: ${need[*]}; install them as root (apt-get install ${need[*]})" >&2
  exit 1
fi
echo "system-packages: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
