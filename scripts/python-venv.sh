# Sourced by the set-up scripts that keep Python tools in a venv under target/:
# `usable_venv DIR` makes DIR a working venv (Debian's python3-venv is installed with apt-get when
# the module is missing; a venv left half-made — no python, or no pip — is made anew).
usable_venv() {
  local venv="$1"
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    # shellcheck source=apt-install.sh
    . "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh"
    apt_install python3-venv
  fi
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
  fi
}
