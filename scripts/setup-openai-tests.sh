#!/usr/bin/env bash
# Prepares the OpenAI-compatibility test of `rlhf serve` (crates/rlhf-cli/tests/serve.rs): a Python
# virtual environment at target/openai-venv with the official `openai` client, pinned below.
#   - python3 -m venv (Debian's python3-venv is installed with apt-get when the module is missing;
#     needs root);
#   - pip install openai==$OPENAI_VERSION from PyPI.
# Safe to run again: it does nothing when the venv already has exactly that version.
set -euo pipefail

OPENAI_VERSION=2.54.0

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/target/openai-venv"
py="$venv/bin/python"

installed() {
  [ -x "$py" ] && "$py" -c 'import importlib.metadata as m, sys; sys.exit(m.version("openai") != sys.argv[1])' \
    "$OPENAI_VERSION" 2>/dev/null
}

if installed; then
  echo "openai $OPENAI_VERSION present: $venv"
  exit 0
fi

# shellcheck source=python-venv.sh
. "$root/scripts/python-venv.sh"
usable_venv "$venv"
echo "installing openai $OPENAI_VERSION in $venv"
"$py" -m pip install -q --disable-pip-version-check --no-input "openai==$OPENAI_VERSION"
installed || { echo "error: openai $OPENAI_VERSION did not install in $venv" >&2; exit 1; }
echo "openai tests ready: cargo test -p rlhf-cli --test serve"
