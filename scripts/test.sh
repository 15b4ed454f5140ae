#!/usr/bin/env bash
# Installs everything the suite needs (project, test extras, headless Chromium), type-checks
# engine/, actors/ and server/ with mypy, then runs the whole pytest suite on 2 processes.
# pytest's exit code 5 ("no tests collected") is a failure here.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e ".[test]" || exit 1
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; browser tests will fail" >&2
  fi
fi
python3 -m mypy || { echo "mypy found type errors" >&2; exit 1; }
python3 -m pytest -n 2 --dist loadfile "$@"
rc=$?
if [ "$rc" = 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit "$rc"
