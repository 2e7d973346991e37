#!/usr/bin/env bash
# Set up everything napari-neuroseg needs on a Debian machine: system packages (Xvfb and the
# xcb libraries Qt needs), a virtual environment, torch==2.13.0 first, then the project.
# Idempotent: a second run finds everything in place and returns in seconds.
set -euo pipefail
VENV=${1:-.venv}
STAMP="$VENV/.neuroseg-installed"
APT_PKGS=(xvfb xauth libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
  libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0
  libxcb-cursor0 libegl1 libgl1 libgl1-mesa-dri libdbus-1-3 libfontconfig1 libglib2.0-0)

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3-venv python3-pip)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Reinstall when pyproject.toml changes (its hash is kept in the stamp).
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip
# torch first: a CPU build of 2.13.0; the project's range (torch>=2.2) is then already met.
"${PIP[@]}" install "torch==2.13.0"
"${PIP[@]}" install -e ".[all,test,distributed,dicom]"
echo "$want" > "$STAMP"
echo "setup: environment ready in $VENV"
