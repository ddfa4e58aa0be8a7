#!/usr/bin/env bash
# Install everything Vigil needs on a Debian 12 machine, idempotently (run as root):
# Debian packages (GStreamer RTSP server for test cameras, ffmpeg for checks, Chromium and its
# driver for the browser tests, PostgreSQL for the hub's shared catalog, iptables for the
# thin-WAN test), a virtualenv in .venv, the vigil package with its test extras, the pinned
# hls.js from the npm registry (for the hub's web page and the player test), and
# ansible-core + ansible-lint in .venv-ansible for the provisioning roles (ansible/).
# Re-running does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  ffmpeg mosquitto mosquitto-clients
  python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-tools
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav
  chromium chromium-driver
  postgresql
  iptables  # tests/test_thin_wan.py: cuts and drops on a namespaced WAN (ip and tc come with iproute2)
)
# npm installs hls.js for tests/test_player_browser.py; Debian's nodejs + npm unless some npm is there
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(nodejs npm)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.vigil-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing vigil and its dependencies into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/pip install -q -e ".[test]"
  echo "$want" > "$stamp"
fi

# hls.js at the exact version pinned in each package.json (and its lock file): hub/web for the
# hub's web page (its light ES module build copied to hub/web/vendor/, which the hub serves and the
# wheel carries), tests/player for the browser player test; `npm ci` only when the installed copy
# is missing or another version
for dir in hub/web tests/player; do
  pinned="$(sed -n 's/.*"hls\.js": *"\([^"]*\)".*/\1/p' "$dir/package.json" | head -n1)"
  installed="$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$dir/node_modules/hls.js/package.json" 2>/dev/null \
    | head -n1 || true)"
  if [ "$installed" != "$pinned" ]; then
    echo "setup: installing hls.js $pinned into $dir/node_modules"
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >/dev/null
  fi
done
mkdir -p hub/web/vendor
for f in hls.light.min.mjs LICENSE; do
  src=hub/web/node_modules/hls.js/$f
  [ "$f" = LICENSE ] || src=hub/web/node_modules/hls.js/dist/$f
  cmp -s "$src" "hub/web/vendor/${f/LICENSE/hls.js.LICENSE}" || cp "$src" "hub/web/vendor/${f/LICENSE/hls.js.LICENSE}"
done

# Ansible in its own virtualenv (.venv-ansible), for the provisioning roles in ansible/ and
# tests/test_ansible.py: ansible-core 2.19 (the newest series for a Python 3.11 controller) and
# ansible-lint, at these pins; reinstalled only when the venv is missing or the pins change
ANSIBLE_PINS=(ansible-core==2.19.14 ansible-lint==26.10.1)
if [ ! -x .venv-ansible/bin/python ]; then
  echo "setup: creating .venv-ansible"
  "$PYTHON" -m venv .venv-ansible
fi
stamp=.venv-ansible/.vigil-installed
want="${ANSIBLE_PINS[*]}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing ${ANSIBLE_PINS[*]} into .venv-ansible"
  .venv-ansible/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv-ansible/bin/pip install -q "${ANSIBLE_PINS[@]}"
  echo "$want" > "$stamp"
fi
