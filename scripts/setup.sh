#!/usr/bin/env bash
# One-command set-up for robe-lab: Debian packages (when missing) and the project's .venv.
#
# Idempotent and quick when nothing changed: every make target calls it first.
# Debian packages need root; as a normal user missing packages are installed through sudo
# (which may ask for a password), or the script stops with the exact command to run.
#
# --venv-only (make plots, make compare): never touches Debian packages and never asks for root;
# it (re)builds .venv when requirements.txt changed and python3 -m venv works, and otherwise says
# what to run.
set -euo pipefail

venv_only=0
if [[ ${1:-} == --venv-only ]]; then
    venv_only=1
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

# The Debian packages whose programs the project and its tests run, each with who runs it, are
# listed in one place: scripts/debian-packages.txt ("<program>[,<program>...] <package>  # who").
package_list=scripts/debian-packages.txt
mapfile -t DEB_PACKAGES < <(sed -e 's/#.*//' "$package_list" | awk 'NF { print $2 }')
if ((${#DEB_PACKAGES[@]} == 0)); then
    echo "setup: error: no packages read from $package_list" >&2
    exit 2
fi
if [[ ${1:-} == --list-packages ]]; then
    printf '%s\n' "${DEB_PACKAGES[@]}"
    exit 0
fi

venv=.venv
stamp="$venv/.robe-lab-setup"
want="$(cat requirements.txt scripts/setup.sh pyproject.toml | sha256sum | cut -d' ' -f1)"


if ((venv_only)); then
    if [[ -x $venv/bin/python && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
        exit 0
    fi
    if [[ ! -w . ]] || ! /usr/bin/python3 -c "import ensurepip, venv" 2>/dev/null; then
        echo "setup: .venv is missing or out of date and cannot be built here without Debian packages;" \
             "run 'sudo make setup' once (it installs them), then this command again" >&2
        exit 2
    fi
fi

# One dpkg-query for all of them: the installed ones print "ii <name>"; unknown ones print nothing.
installed="$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "${DEB_PACKAGES[@]}" 2>/dev/null || true)"
missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
    if ! grep -qx "ii  *$pkg" <<<"$installed"; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} && ! venv_only)); then
    echo "setup: installing Debian packages: ${missing[*]}"
    if [[ $EUID -eq 0 ]]; then
        as_root=()
    elif command -v sudo >/dev/null; then
        as_root=(sudo)
    else
        echo "setup: error: packages missing (${missing[*]}) and not root; run: sudo make setup" >&2
        exit 2
    fi
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine has empty package lists: update once, then install.
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Checked once python3 is installed (it is in the package list). Supported: Debian 12 and Ubuntu
# 24.04, whose python3 is 3.11 and 3.12 (the code needs 3.11+).
if ! /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    found="no /usr/bin/python3"
    if [[ -x /usr/bin/python3 ]]; then found="$(/usr/bin/python3 -V 2>&1)"; fi
    echo "setup: error: robe-lab needs Python 3.11 or newer as /usr/bin/python3 (found: $found);" \
         "supported systems: Debian 12, Ubuntu 24.04" >&2
    exit 2
fi

if [[ ! -x $venv/bin/python || ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
    echo "setup: creating $venv (system site packages, for Debian's mininet) and installing requirements.txt"
    rm -rf "$venv"
    # Built through sudo: the venv is the user's, also when this fails half-way (or a later
    # `make test` as the user could neither use nor remove it).
    if [[ $EUID -eq 0 && -n "${SUDO_USER:-}" && "${SUDO_USER}" != root ]]; then
        trap 'chown -R "$SUDO_USER": "$venv" robe_lab.egg-info 2>/dev/null || true' EXIT
    fi
    /usr/bin/python3 -m venv --system-site-packages "$venv"
    # Playwright drives Debian's chromium (scripts/debian-packages.txt): never download its own browsers
    # (pip never does; this also stops any later `playwright install` from doing so).
    export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt
    # The project itself, editable: the `robe-lab` command in .venv/bin, the code used from this checkout.
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
    if ((! venv_only)); then
        "$venv/bin/python" -c "import mininet.net" || {
            echo "setup: error: Debian's mininet module does not import in $venv" >&2; exit 2; }
    fi
    echo "$want" > "$stamp"
fi

# The kernel: the experiments need MPTCP switched on; netem is optional (a userspace emulator
# stands in), but on Ubuntu its module is in a separate package.
if ((! venv_only)); then
    if [[ ! -e /proc/sys/net/mptcp/enabled ]]; then
        echo "setup: warning: this kernel has no MPTCP (no /proc/sys/net/mptcp): the experiments need" \
             "Linux >= 5.6 built with CONFIG_MPTCP=y" >&2
    elif [[ "$(cat /proc/sys/net/mptcp/enabled)" != 1 ]]; then
        echo "setup: warning: MPTCP is switched off (net.mptcp.enabled=0); switch it on with:" \
             "sudo sysctl -w net.mptcp.enabled=1" >&2
    fi
    netem_module="$(find "/lib/modules/$(uname -r)" -name 'sch_netem.ko*' -print -quit 2>/dev/null || true)"
    if [[ -z $netem_module && ! -d /sys/module/sch_netem ]] && grep -qi '^ID=ubuntu' /etc/os-release 2>/dev/null; then
        echo "setup: note: no sch_netem module (links use the userspace emulator); on Ubuntu it is in" \
             "linux-modules-extra-$(uname -r)" >&2
    fi
fi
