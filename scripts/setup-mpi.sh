#!/usr/bin/env bash
# Prepares data-parallel builds and tests (`--features rlhf-cli/mpi`,
# crates/rlhf-cli/tests/data_parallel.rs): Open MPI's `mpirun` and headers, and libclang, which
# rsmpi's build uses to read them. Debian packages openmpi-bin, libopenmpi-dev, libclang-dev,
# installed with apt-get when missing (needs root). Safe to run again.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

missing=()
command -v mpirun >/dev/null 2>&1 || missing+=(openmpi-bin)
command -v mpicc >/dev/null 2>&1 || missing+=(libopenmpi-dev)
# bindgen loads libclang at build time; Debian installs it under /usr/lib/llvm-N/lib.
compgen -G "/usr/lib/llvm-*/lib/libclang*.so*" >/dev/null || compgen -G "/usr/lib/x86_64-linux-gnu/libclang*.so*" >/dev/null \
  || missing+=(libclang-dev)

if [ ${#missing[@]} -gt 0 ]; then
  # shellcheck source=apt-install.sh
  . "$root/scripts/apt-install.sh"
  apt_install "${missing[@]}"
fi
echo "MPI present: $(mpirun --version 2>/dev/null | head -1)"
