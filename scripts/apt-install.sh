# Sourced by the test set-up scripts: `apt_install PKG…` installs Debian packages (root only);
# `apt-get update` runs only when something is actually missing.
apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: $* missing; run as root (apt-get install $*)" >&2
    exit 1
  fi
  echo "installing Debian $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "$@"
}
