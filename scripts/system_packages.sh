#!/usr/bin/env bash
# The Debian packages the integration tests drive, installed when missing:
#   chromium chromium-driver  headless Chromium, the browser client (tests/test_browser.py, test_api_docs.py)
#   postgresql                PostgreSQL's server binaries, the shared store: initdb runs as the
#                             `postgres` user the package creates (tests/pg.py, test_multihost.py)
#   haproxy                   the TCP load balancer in front of two balancers (test_multihost.py, test_deploy.py)
# Without one, its tests skip, and the run's last lines name the package.
#
# As root, the missing ones are installed with apt-get (apt-get update runs
# only then: with everything present this is a few file checks). Otherwise, or
# when apt-get fails, it prints the one command that installs them and exits 0:
# the tests still run. scripts/test.sh and .ci/run call it.
set -euo pipefail

cd "$(dirname "$0")/.."
me="$(pwd)/scripts/system_packages.sh"
say() { echo "system_packages.sh: $*"; }

missing=()
{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || missing+=(chromium chromium-driver)
{ compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && id postgres >/dev/null 2>&1; } || missing+=(postgresql)
command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
((${#missing[@]})) || exit 0

if ! command -v apt-get >/dev/null; then
    say "missing ${missing[*]} (Debian's names) and there is no apt-get here: install them with this system's" \
        "package manager, or their tests will skip"
    exit 0
fi
if ((EUID != 0)); then
    say "missing ${missing[*]}: their tests will skip. To install them (apt-get install ${missing[*]}), run:"
    echo "    sudo $me"
    exit 0
fi

say "installing ${missing[*]} with apt-get"
apt_log="$(mktemp)"
trap 'rm -f "$apt_log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if apt-get update -qq >"$apt_log" 2>&1 && apt-get install -y -qq "${missing[@]}" >>"$apt_log" 2>&1; then
    say "installed ${missing[*]}"
else
    tail -n 20 "$apt_log" | sed 's/^/    apt-get: /'
    say "could not install ${missing[*]} (apt-get's last lines above): their tests will skip. Once apt-get works, run:"
    echo "    $me"
fi
