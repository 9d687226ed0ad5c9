#!/usr/bin/env bash
# GPU throughput of deopt's engine, run on a GPU machine from carried files alone (no Rust, no
# network there). README, "GPU builds", says how to prepare the bundle on a build machine:
#
#   BUNDLE/deopt-cuda-sm90.tar.xz  the CUDA build with llama.cpp's shared libraries
#                                  (benches/gpu/prepare.sh makes the bundle); without it,
#                                  BUNDLE/deopt is used (a dry run with a CPU build)
#   BUNDLE/tok-gemma3.gguf       tokenizer of the default model (deopt model tokenizer)
#   BUNDLE/tok-smollm2.gguf      a Llama-style BPE tokenizer with a chat template (SmolLM2)
#
# Usage: benches/gpu/run.sh BUNDLE OUTDIR [PROMPTS]
# Writes OUTDIR/*.json (deopt bench engine results), OUTDIR/gpu-util-*.csv (nvidia-smi samples
# during each benchmark), OUTDIR/summary.txt with the projection of `--pop 32 --gens 200`.
set -euo pipefail
bundle=$(cd "${1:?usage: run.sh BUNDLE OUTDIR [PROMPTS]}" && pwd)
out=${2:?usage: run.sh BUNDLE OUTDIR [PROMPTS]}
prompts=${3:-32}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=${TMPDIR:-/tmp}/deopt-gpu-$$
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

if [ -f "$bundle/deopt-cuda-sm90.tar.xz" ]; then
    tar -xJf "$bundle/deopt-cuda-sm90.tar.xz" -C "$work"
    deopt=$work/deopt-cuda-sm90/deopt
else
    deopt=$bundle/deopt
fi
# CUDA runtime and cuBLAS (CUDA 13): the toolkit's, or PyTorch's NVIDIA wheels.
libdirs=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && libdirs="$libdirs:$d"
done
py_libs=$(python3 - <<'EOF' 2>/dev/null || true
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
dirs = sorted({os.path.dirname(p) for r in roots for p in glob.glob(os.path.join(r, "nvidia", "*", "lib", "lib*.so*"))})
print(":".join(dirs))
EOF
)
[ -n "$py_libs" ] && libdirs="$libdirs:$py_libs"
export LD_LIBRARY_PATH="${libdirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
chmod +x "$deopt"
{
    echo "date: $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader || true
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    ldd "$deopt" "$(dirname "$deopt")"/libggml-cuda.so.0 2>/dev/null | grep -E "cuda|cublas|ggml|llama|not found" || true
    "$deopt" --version
} | tee "$out/environment.txt"

bench() { # name model extra-args...
    local name=$1 model=$2
    shift 2
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -lms 500 >"$out/gpu-util-$name.csv" 2>/dev/null &
    local smi=$!
    local t0=$SECONDS
    "$deopt" bench engine --model "$model" --prompts "$prompts" --no-naive --json --out "$out/$name.json" "$@" \
        >/dev/null 2>"$out/$name.stderr" || echo "bench $name failed: $(tail -3 "$out/$name.stderr")"
    kill "$smi" 2>/dev/null || true
    echo "bench $name: $((SECONDS - t0)) s"
}

# Shapes to measure (DEOPT_GPU_SHAPES overrides, e.g. for a dry run on a CPU machine).
for shape in ${DEOPT_GPU_SHAPES:-gemma3-270m llama-8b}; do
    case $shape in
        # The default model's architecture and tokenizer, random weights.
        gemma3-270m) tok=$bundle/tok-gemma3.gguf ;;
        # Llama-3 dimensions with a Llama-style BPE tokenizer padded to 128,256 tokens.
        *) tok=$bundle/tok-smollm2.gguf ;;
    esac
    "$deopt" model synth --shape "$shape" --type q4_0 --tokenizer "$tok" --out "$work/$shape.gguf"
    bench "$shape-batched" "$work/$shape.gguf" --batch-prompts "$prompts"
    bench "$shape-b8" "$work/$shape.gguf" --batch-prompts 8
    bench "$shape-batched-ub2048" "$work/$shape.gguf" --batch-prompts "$prompts" --batch 2048
    rm -f "$work/$shape.gguf"
done

python3 - "$out" <<'EOF' | tee "$out/summary.txt"
import json, os, sys, csv
out = sys.argv[1]
evals = 32 + 32 * 200  # deopt run --pop 32 --gens 200
for name in sorted(f[:-5] for f in os.listdir(out) if f.endswith(".json")):
    b = json.load(open(os.path.join(out, name + ".json")))
    util = []
    try:
        for row in csv.reader(open(os.path.join(out, f"gpu-util-{name}.csv"))):
            if row and row[1].strip().endswith("%"):
                util.append(float(row[1].strip().rstrip(" %")))
    except (OSError, IndexError, ValueError):
        pass
    busy = f"{sum(util)/len(util):.0f}% mean, {max(util):.0f}% max" if util else "n/a"
    print(f"{name}: {b['prompts']} prompts x {b['items']} items; raw {b['raw_tokens_per_s']:.0f} tok/s; "
          f"exact {b['exact_evals_per_s']:.2f} evals/s ({b['engine_effective_tokens_per_s']:.0f} logical tok/s); "
          f"batched x{b['batch_prompts']} (waves of {b.get('batched_wave', '?')}) {b['batched_evals_per_s']:.2f} evals/s "
          f"({b['batched_effective_tokens_per_s']:.0f} logical tok/s), exact/batched {b['ratio_exact_over_batched']:.2f}x "
          f"(pairs {min(b.get('ratio_runs') or [0]):.2f}-{max(b.get('ratio_runs') or [0]):.2f}); "
          f"drift p {b['batched_max_prob_diff']:.1e}; GPU util {busy}; "
          f"pop 32 x 200 gens: {evals / b['batched_evals_per_s'] / 3600:.2f} h batched, "
          f"{evals / b['exact_evals_per_s'] / 3600:.2f} h exact")
EOF
