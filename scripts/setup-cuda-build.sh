#!/usr/bin/env bash
# Prepares `cargo build --features cuda` on a machine without a GPU or a CUDA toolkit: the CUDA 13.0
# compiler, headers and libraries come from NVIDIA's PyPI wheels, installed in a Python virtual
# environment at target/cuda-venv, and the build environment is written to target/cuda-env.sh.
#   - python3 -m venv (Debian's python3-venv is installed with apt-get when the module is missing;
#     needs root);
#   - pip install of the CUDA 13.0 Update 3 components pinned below (the versions of PyPI's
#     cuda-toolkit==13.0.3.0; they land in site-packages/nvidia/cu13, a tree laid out like a
#     toolkit: bin/ include/ lib/ nvvm/), and NCCL; about 1 GB of wheels, 1.6 GB installed:
#       nvidia-cuda-nvcc, -crt, nvidia-nvvm  nvcc, ptxas, cicc: candle-kernels' build script
#                                            (cudaforge) compiles its .cu files to PTX and a static
#                                            library with it; cudarc runs `nvcc --version` to pick
#                                            its CUDA API version;
#       nvidia-cuda-runtime, -cccl           cuda_runtime.h, cuda_fp16.h, cuda_bf16.h, cuda.h, CCCL
#                                            (cub, libcu++) and libcudart.so.13;
#       nvidia-cuda-nvrtc, nvidia-cublas,    libnvrtc/libcublas/libcublasLt/libcurand, which cudarc
#       nvidia-curand                        (dynamic-linking) links against;
#       nvidia-nccl-cu13 (2.30, 0.2 GB)      nccl.h and libnccl.so.2 for the `nccl` feature (cudarc's
#                                            `nccl` binds the NCCL 2.30 API);
#   - target/cuda-venv/link: what the linker needs and the wheels lack: unversioned libX.so links
#     to the wheels' libX.so.N, and a stub libcuda.so (soname libcuda.so.1, every driver-API entry
#     point of cuda.h returning CUDA_ERROR_STUB_LIBRARY), built with cc — the toolkit's
#     lib64/stubs/libcuda.so is not on PyPI. At run time libcuda.so.1 is the GPU machine's driver;
#     target/cuda-venv/stub-run holds the stub as libcuda.so.1 for starting the binaries (CPU
#     device only) where there is none: LD_LIBRARY_PATH=$CUDA_RUNTIME_LIBS:target/cuda-venv/stub-run.
# The binaries need libcudart.so.13, libcublas(Lt).so.13 and libcurand.so.10 (and libnccl.so.2)
# at run time: from a CUDA 13 install, or LD_LIBRARY_PATH=$CUDA_RUNTIME_LIBS (the wheels').
# nvcc 13.0 emits PTX ISA 9.0, which a CUDA 13.0 driver loads; a newer nvcc's PTX would not.
# CUDA_COMPUTE_CAP (90: H100/H200, unless already set when cargo runs) replaces nvidia-smi.
# Use: ./scripts/setup-cuda-build.sh && . target/cuda-env.sh && cargo build -p rlhf-cli --features cuda
# Safe to run again: it does nothing when the venv already has exactly these versions and
# target/cuda-env.sh is written (remove that file to rebuild the link directory and rewrite it).
set -euo pipefail

PINS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.1.1.3
  nvidia-curand==10.4.0.35
  nvidia-nccl-cu13==2.30.7
)

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/target/cuda-venv"
py="$venv/bin/python"
env_file="$root/target/cuda-env.sh"

installed() {
  [ -x "$py" ] && "$py" - "${PINS[@]}" <<'EOF' 2>/dev/null
import importlib.metadata as m, sys
for pin in sys.argv[1:]:
    name, version = pin.split("==")
    if m.version(name) != version:
        sys.exit(1)
EOF
}

if installed && [ -f "$env_file" ] && [ -f "$venv/link/libcuda.so" ]; then
  echo "CUDA build environment present: $env_file (wheels in $venv)"
  exit 0
fi

if ! installed; then
  # shellcheck source=python-venv.sh
  . "$root/scripts/python-venv.sh"
  usable_venv "$venv"
  echo "installing ${PINS[*]} in $venv"
  "$py" -m pip install -q --disable-pip-version-check --no-input --no-cache-dir "${PINS[@]}"
  installed || { echo "error: the pinned CUDA wheels did not install in $venv" >&2; exit 1; }
fi

site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')"
cuda="$site/nvidia/cu13"
nccl="$site/nvidia/nccl"
[ -x "$cuda/bin/nvcc" ] || { echo "error: no nvcc at $cuda/bin/nvcc" >&2; exit 1; }

# Link directory: unversioned names for the linker, and the libcuda stub.
link="$venv/link"
rm -rf "$link"
mkdir -p "$link"
for lib in cuda/cudart cuda/nvrtc cuda/curand cuda/cublas cuda/cublasLt nccl/nccl; do
  dir="${lib%/*}"; dir="${!dir}/lib"; lib="${lib#*/}"
  so="$(cd "$dir" && ls "lib$lib.so."* 2>/dev/null | grep -E "^lib$lib\.so\.[0-9]+$" | head -n1 || true)"
  [ -n "$so" ] || { echo "error: no lib$lib.so.N in $dir" >&2; exit 1; }
  ln -s "$dir/$so" "$link/lib$lib.so"
done
# Every cu* function of cuda.h, under each of its names (the _v2.. aliases the macros select, the
# legacy names, and the per-thread-stream _ptsz/_ptds ones), plus the profiler entry points.
{
  for def in "" -D__CUDA_API_VERSION_INTERNAL -DCUDA_API_PER_THREAD_DEFAULT_STREAM; do
    # shellcheck disable=SC2086
    cc -E -P $def -I"$cuda/include" -x c "$cuda/include/cuda.h" | grep -oE '\bcu[A-Z][A-Za-z0-9_]*\s*\(' | tr -d ' ('
  done
  printf '%s\n' cuProfilerInitialize cuProfilerStart cuProfilerStop
} | sort -u | awk '{ print "int " $1 "(void) { return 34; }" }' >"$link/libcuda-stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link/libcuda.so" "$link/libcuda-stub.c"
# Not on LIBRARY_PATH or LD_LIBRARY_PATH: where a driver is, libcuda.so.1 must be the driver.
mkdir -p "$venv/stub-run"
ln -sfn "$link/libcuda.so" "$venv/stub-run/libcuda.so.1"

cat >"$env_file" <<EOF
# Written by scripts/setup-cuda-build.sh: source it before \`cargo build --features cuda\`.
export CUDA_HOME="$cuda"
export CUDA_PATH="$cuda"
export NVCC="$cuda/bin/nvcc"
export PATH="$cuda/bin:\$PATH"
export CUDA_COMPUTE_CAP="\${CUDA_COMPUTE_CAP:-90}"
export CUDARC_CUDA_VERSION=13000
export LIBRARY_PATH="$link\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
# For running the binaries with the wheels' libraries (not exported: LD_LIBRARY_PATH=\$CUDA_RUNTIME_LIBS …).
CUDA_RUNTIME_LIBS="$cuda/lib:$nccl/lib"
EOF
echo "CUDA build ready: . target/cuda-env.sh && cargo build -p rlhf-cli --features cuda"
echo "  nvcc $("$cuda/bin/nvcc" --version | grep -oE 'V[0-9.]+'), env in $env_file"
