#!/usr/bin/env bash
# The staff web application's browser assets, from the npm registry through npm itself, pinned by
# package-lock.json, copied where the server serves them (server/ui/static/vendor/, not committed).
# Idempotent; run by `make setup`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null; then
    echo "web-assets: npm is missing (scripts/system-packages.sh installs it)" >&2
    exit 1
fi
npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
dest=server/ui/static/vendor/leaflet
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
cp node_modules/leaflet/dist/leaflet.js node_modules/leaflet/dist/leaflet.css node_modules/leaflet/LICENSE "$dest.tmp/"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "web-assets: leaflet $(node -p 'require("./node_modules/leaflet/package.json").version') in $dest"
