#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine (as root): Debian packages, npm packages, the
# build, and the guest image. Safe to re-run: every step is idempotent or cached.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
npm ci --no-audit --no-fund
npm run build
node bin/ferry.js image build
