#!/usr/bin/env python3
"""Time ONE prompt-tuning step (HF transformers + peft, fp32, CPU) on the 24 VSM-13 items.

Layout of every row (left padded):  [pad ... pad] BOS [soft_1 .. soft_T] <item text tokens>
The soft prompt (peft PromptTuning, RANDOM init) is spliced in right after BOS, so
the peft model's own forward (which prepends the prompt before BOS) is not used; we
take the prompt embeddings from peft_model.get_prompt() and call the frozen base model
with inputs_embeds, an attention mask and position ids derived from that mask.

One step = forward of all items as one padded batch + backward + Adam step.
Prints one JSON object.
"""
import argparse
import csv
import json
import os
import platform
import resource
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

DEFAULT_DIR = os.path.expanduser("~/.cache/deopt/models")
DEFAULT_GGUF = "gemma-3-270m-q4_k_m.f16.gguf"
DEFAULT_CSV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "surveys", "vsm13.csv")

TEMPLATE = (
    "Choose the option that best aligns with your own value system. "
    "Reply with the number of the option only.\n"
    "Options: {options}\n"
    "Question: {text}\n"
    "Answer: "
)


def rss_mib():
    # ru_maxrss is KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_items(path):
    items = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            opts = [o.strip() for o in row["options"].split(" | ")]
            first = int(row["first_code"])
            codes = list(range(first, first + len(opts)))
            options = " ".join(f"{c}.{o}" for c, o in zip(codes, opts))
            items.append({
                "id": row["id"],
                "codes": codes,
                "prompt": TEMPLATE.format(options=options, text=row["text"]),
            })
    return items


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default=DEFAULT_DIR)
    ap.add_argument("--gguf", default=DEFAULT_GGUF)
    ap.add_argument("--csv", default=DEFAULT_CSV)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--virtual-tokens", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--target", type=float, default=3.0)
    ap.add_argument("--attn", default=None,
                    help="attn_implementation passed to from_pretrained (default: transformers' choice)")
    ap.add_argument("--full-logits", action="store_true",
                    help="compute logits at every position (default: only the last one, logits_to_keep=1)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    import transformers
    import peft
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    out = {
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "gguf": getattr(gguf, "__version__", None) or _dist_version("gguf"),
            "numpy": np.__version__,
        },
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "model": os.path.join(args.model_dir, args.gguf),
        "dtype": "float32",
    }

    # ---------------- model + tokenizer from GGUF ----------------
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(args.model_dir, gguf_file=args.gguf)
    kw = dict(gguf_file=args.gguf, torch_dtype=torch.float32)
    if args.attn:
        kw["attn_implementation"] = args.attn
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, **kw)
    model.eval()  # no dropout; gradients still flow
    out["load_seconds"] = round(time.perf_counter() - t0, 3)
    out["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    out["rss_after_load_mib"] = round(rss_mib(), 1)

    T = args.virtual_tokens
    cfg = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=T,
                             prompt_tuning_init=PromptTuningInit.RANDOM)
    pm = get_peft_model(model, cfg)
    base = pm.base_model  # for prompt learning this is the underlying *ForCausalLM
    n_train = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in pm.parameters())
    frozen_ok = all(not p.requires_grad for p in base.parameters())
    out["params"] = {"trainable": n_train, "total": n_total, "base_all_frozen": frozen_ok}

    # ---------------- items -> token ids ----------------
    items = load_items(args.csv)
    bos, pad = tok.bos_token_id, tok.pad_token_id
    if pad is None:
        pad = tok.eos_token_id
    ids = []
    for it in items:
        e = tok(it["prompt"], add_special_tokens=True)["input_ids"]
        if e[0] != bos:
            raise SystemExit(f"tokenizer did not put BOS first (got {e[:3]}, bos={bos})")
        if e[1] == bos:
            raise SystemExit("double BOS")
        ids.append(e)
    # option label tokens, per item (codes may differ per item)
    label_ids = []
    for it in items:
        row = []
        for c in it["codes"]:
            t = tok(str(c), add_special_tokens=False)["input_ids"]
            if len(t) != 1:
                raise SystemExit(f"label {c!r} is not a single token: {t}")
            row.append(t[0])
        label_ids.append(row)
    K = max(len(r) for r in label_ids)
    if any(len(r) != K for r in label_ids):
        raise SystemExit("items with differing option counts not supported by this timing script")
    label_ids = torch.tensor(label_ids)                              # [B, K]
    codes = torch.tensor([it["codes"] for it in items], dtype=torch.float32)  # [B, K]
    targets = torch.full((len(items),), args.target)

    B = len(ids)
    n_tok = [len(e) for e in ids]        # incl. BOS, excl. soft prompt
    Lmax = max(n_tok)
    L = Lmax + T
    ids_full = torch.full((B, L), pad, dtype=torch.long)
    attn = torch.zeros((B, L), dtype=torch.long)
    soft = torch.zeros((B, L), dtype=torch.bool)
    for i, e in enumerate(ids):
        p = Lmax - len(e)                # left padding
        ids_full[i, p] = e[0]            # BOS
        soft[i, p + 1:p + 1 + T] = True  # soft prompt right after BOS
        ids_full[i, p + 1 + T:] = torch.tensor(e[1:])
        attn[i, p:] = 1
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    out["seq_lengths_tokens"] = n_tok
    out["seq_lengths_with_soft_prompt"] = [n + T for n in n_tok]
    out["padded_batch_shape"] = [B, L]
    out["pad_fraction"] = round(1 - attn.sum().item() / attn.numel(), 4)
    out["label_tokens"] = tok.convert_ids_to_tokens(label_ids[0].tolist())
    out["logits_to_keep"] = 0 if args.full_logits else 1

    embed = base.get_input_embeddings()
    with torch.no_grad():
        tok_emb = embed(ids_full)        # frozen; includes Gemma's sqrt(d) scaling
    soft3 = soft.unsqueeze(-1)

    def forward():
        prompts = pm.get_prompt(batch_size=B).to(tok_emb.dtype)   # [B, T, D], trainable
        filled = torch.zeros_like(tok_emb)
        filled[soft] = prompts.reshape(-1, prompts.shape[-1])
        x = torch.where(soft3, filled, tok_emb)
        o = base(inputs_embeds=x, attention_mask=attn, position_ids=pos,
                 use_cache=False, logits_to_keep=0 if args.full_logits else 1)
        last = o.logits[:, -1, :]                                   # [B, V]
        lab = torch.gather(last, 1, label_ids)                      # [B, K]
        probs = torch.softmax(lab.float(), dim=-1)
        expected = (probs * codes).sum(-1)                          # [B]
        loss = ((expected - targets) ** 2).mean()
        return loss, expected

    opt = torch.optim.Adam([p for p in pm.parameters() if p.requires_grad], lr=args.lr)
    before = pm.get_prompt(batch_size=1).detach().clone()

    step_s, losses = [], []
    for _ in range(args.steps):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss, expected = forward()
        loss.backward()
        opt.step()
        step_s.append(time.perf_counter() - t)
        losses.append(round(loss.item(), 6))
    after = pm.get_prompt(batch_size=1).detach()
    out["prompt_changed"] = bool((after - before).abs().max().item() > 0)

    with torch.no_grad():
        t = time.perf_counter()
        _, expected_nograd = forward()
        fwd_s = time.perf_counter() - t

    out["steps"] = args.steps
    out["step_seconds"] = [round(s, 4) for s in step_s]
    out["step1_warmup_seconds"] = round(step_s[0], 4)
    out["median_step_seconds_2_to_N"] = (round(statistics.median(step_s[1:]), 4)
                                         if len(step_s) > 1 else None)
    out["forward_nograd_seconds"] = round(fwd_s, 4)
    out["losses"] = losses
    out["expected_answers_after"] = [round(v, 3) for v in expected_nograd.tolist()]
    out["peak_rss_mib"] = round(rss_mib(), 1)
    out["loadavg"] = os.getloadavg()
    print(json.dumps(out, indent=1))


def _dist_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return None


if __name__ == "__main__":
    sys.exit(main())
