#!/usr/bin/env bash
# Reproducible CUDA (sm_90 only) build of deopt on a machine WITHOUT a GPU and WITHOUT an apt CUDA,
# using NVIDIA's CUDA 13.0 toolkit wheels from PyPI.
# Route: llama.cpp/ggml built as SHARED libraries (LLAMA_BUILD_SHARED_LIBS=1), so ggml-cuda links
# libcudart.so.13 / libcublas.so.13 dynamically (no static cuBLAS). Result: deopt + 5 .so files.
# Needs: python3 + pip, unzip, gcc/g++ (12 here), cmake (3.25 here), clang/libclang-dev, Rust.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)   # the checkout, built in place into target/cuda
TK=${TK:-${DEOPT_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/deopt}/cuda-toolkit}  # where the toolkit is assembled
CUDA=$TK/cuda-13.0                      # assembled CUDA_PATH
ARCH=${ARCH:-90-real}                   # H100/H200 SASS only (no PTX)

# ---- 1. wheels (CUDA 13.0 line; the pip names carry no -cuXX suffix from 13 on) -------------
# Versions that 13.0.* resolved to (pinned here): nvcc 13.0.88, runtime 13.0.96, cublas 13.0.2.14, cccl 13.0.85,
# crt 13.0.88, nvvm 13.0.88, culibos 13.0.85.
if [ ! -x "$CUDA/bin/nvcc" ]; then
  mkdir -p "$TK/wheels" "$TK/unpack"
  cd "$TK/wheels"
  for p in nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cublas==13.0.2.14 \
           nvidia-cuda-cccl==13.0.85 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
           nvidia-cuda-culibos==13.0.85; do
    python3 -m pip download -q --no-deps -d . "$p"
  done
  # All wheels unpack into nvidia/cu13/{bin,include,lib,nvvm}.
  for w in *.whl; do unzip -q -o "$w" 'nvidia/*' -d "$TK/unpack"; done

  # ---- 2. assemble a toolkit tree in the layout nvcc.profile and CMake's FindCUDAToolkit expect
  U=$TK/unpack/nvidia/cu13
  mkdir -p "$CUDA/targets/x86_64-linux" "$CUDA/nvvm/lib64" "$CUDA/nvvm/include"
  mv "$U/bin" "$CUDA/bin"                                  # nvcc, ptxas, fatbinary, nvlink, cudafe++
  mv "$U/nvvm/bin" "$U/nvvm/libdevice" "$CUDA/nvvm/"       # cicc, libdevice.10.bc
  mv "$U/include" "$CUDA/targets/x86_64-linux/include"     # runtime, crt, cccl (include/cccl), cublas headers
  mv "$U/lib" "$CUDA/targets/x86_64-linux/lib"
  mv "$CUDA/targets/x86_64-linux/lib/libnvvm.so.4" "$CUDA/nvvm/lib64/"
  ln -s libnvvm.so.4 "$CUDA/nvvm/lib64/libnvvm.so"
  cp "$CUDA/targets/x86_64-linux/include/nvvm.h" "$CUDA/nvvm/include/"
  ln -s targets/x86_64-linux/include "$CUDA/include"
  ln -s targets/x86_64-linux/lib "$CUDA/lib64"
  for l in cudart cublas cublasLt nvblas; do ln -s "lib$l.so.13" "$CUDA/lib64/lib$l.so"; done
  rm -rf "$TK/unpack"

  # ---- 3. libcuda.so link stub (no wheel ships one): every cu* entry point declared in cuda.h,
  # each returning CUDA_ERROR_STUB_LIBRARY (34), SONAME libcuda.so.1 -> at run time the driver's
  # real libcuda.so.1 is used.
  mkdir -p "$TK/stub/runtime" "$CUDA/lib64/stubs"
  echo '#include <cuda.h>' | gcc -E -P -I"$CUDA/include" -x c - \
    | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | sed 's/[[:space:](]//g' | sort -u > "$TK/stub/names.txt"
  { echo '/* libcuda link stub: all entry points return CUDA_ERROR_STUB_LIBRARY (34) */'
    while read -r n; do echo "int $n(void) { return 34; }"; done < "$TK/stub/names.txt"; } > "$TK/stub/libcuda_stub.c"
  gcc -shared -fPIC -O2 -Wl,-soname,libcuda.so.1 -o "$CUDA/lib64/stubs/libcuda.so" "$TK/stub/libcuda_stub.c"
  # Only for starting the binary on a machine without a driver (tests here), never carried:
  cp "$CUDA/lib64/stubs/libcuda.so" "$TK/stub/runtime/libcuda.so.1"
fi
"$CUDA/bin/nvcc" --version | tail -2
[ "${TOOLKIT_ONLY:-0}" = 1 ] && exit 0

cd "$ROOT"

# ---- 5. build -----------------------------------------------------------------------------------
# llama-cpp-sys-2's build.rs forwards every CMAKE_* and GGML_* env var to CMake as a -D define.
# No target-cpu=native / GGML_NATIVE (the build script sets GGML_NATIVE=OFF without it).
export CUDA_PATH=$CUDA CUDAToolkit_ROOT=$CUDA CUDACXX=$CUDA/bin/nvcc
export PATH=$CUDA/bin:$PATH
export CMAKE_CUDA_COMPILER=$CUDA/bin/nvcc
export CMAKE_CUDA_ARCHITECTURES=$ARCH
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
export LLAMA_BUILD_SHARED_LIBS=1
# The binary finds libllama.so/libggml*.so next to itself:
export RUSTFLAGS='-C link-arg=-Wl,-rpath,$ORIGIN'
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target/cuda}
time nice -n 10 cargo build --release --locked --features cuda -j 2

R=$CARGO_TARGET_DIR/release
ls -la "$R"/deopt

echo "next: benches/gpu/prepare.sh $CARGO_TARGET_DIR BUNDLE_DIR"
