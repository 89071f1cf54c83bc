#!/usr/bin/env bash
# Idempotent setup for gridbranch on Debian 12: system packages, the virtualenv with
# pinned dependencies, and the web map's npm packages. `setup.sh --test` also installs
# what the tests need (Debian's chromium for the browser tests, and gdal-bin, whose ogrinfo
# and ogr2ogr read the service's OGC API – Features as QGIS and GDAL users do). wrk (a load client in C)
# is for the benchmarks in bench/. nginx is the stack's front (`gridbranch stack`): Debian's
# package, run as a private instance, never the system service.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

say() { printf '[setup] %s\n' "$*"; }

# libpango and the Noto CJK fonts: the monthly report's PDF (WeasyPrint) and the browser's Chinese
packages=(postgresql-15-postgis-3 postgresql-contrib python3-venv nodejs npm wrk nginx libpango-1.0-0 libpangoft2-1.0-0
  fonts-noto-cjk)
[ $want_test = 1 ] && packages+=(chromium gdal-bin)

missing=()
for p in "${packages[@]}"; do
  case "$p" in
    nodejs) command -v node >/dev/null 2>&1 && continue ;;
    npm) command -v npm >/dev/null 2>&1 && continue ;;
    python3-venv) python3 -c 'import venv, ensurepip' >/dev/null 2>&1 && continue ;;
  esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    say "this machine has no apt-get. Install these (or their equivalents) and run again:"
    extra=""; [ $want_test = 1 ] && extra=", Chromium, GDAL (ogrinfo, ogr2ogr)"
    say "  PostgreSQL 15 with PostGIS 3, Python 3.11 with venv, Node.js >= 20 with npm$extra"
    say "  Debian names: ${missing[*]}"
    say "or point GRIDBRANCH_DATABASE_URL at an existing PostGIS database."
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null
fi

# Python: a virtualenv with the pinned dependencies and the package itself (editable).
stamp_py=.venv/.gridbranch-stamp
want_py=$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp_py" 2>/dev/null)" != "$want_py" ]; then
  say "creating the virtualenv (.venv) with pinned dependencies"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  pip_quiet() { .venv/bin/python -m pip "$@" 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }; return "${PIPESTATUS[0]}"; }
  pip_quiet install -q --upgrade pip
  pip_quiet install -q -r requirements.lock
  pip_quiet install -q --no-deps -e .
  echo "$want_py" > "$stamp_py"
fi

# Web map: npm packages from the committed lock file (never a CDN).
stamp_js=web_map/node_modules/.gridbranch-stamp
want_js=$(sha256sum web_map/package-lock.json | cut -c1-16)
if [ "$(cat "$stamp_js" 2>/dev/null)" != "$want_js" ]; then
  say "installing the web map's npm packages (npm ci)"
  (cd web_map && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want_js" > "$stamp_js"
fi
say "ready ($ROOT)"
