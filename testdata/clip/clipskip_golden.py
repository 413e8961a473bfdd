#!/usr/bin/python3
"""Golden data for gosd's CLIP text model with clip skip 2.

Runs the text encoder of an SD 1.x single-file safetensors checkpoint in
PyTorch (float32, torch.nn.MultiheadAttention with a causal mask for the
attention, torch.nn.LayerNorm, quick_gelu MLP) on the golden prompt's tokens,
takes the output of the penultimate layer (transformers' hidden_states[-2],
as AUTOMATIC1111 does for "Clip skip: 2") and applies final_layer_norm.
Writes the first ROWS token rows (start token, the prompt's 10 tokens, the
end token and a few pads) as a float32 .npy, to keep the file small.

Usage (from the repository root, with Debian's python3-torch):
    /usr/bin/python3 testdata/clip/clipskip_golden.py CHECKPOINT.safetensors \
        ../shared/golden/sd15-dev-fox/meta.json testdata/clip/cond_clipskip2_rows16.npy
"""
import json
import struct
import sys

import numpy as np
import torch

PREFIX = "cond_stage_model.transformer.text_model."
ROWS = 16
DTYPES = {"F16": np.float16, "F32": np.float32, "BF16": None}


def read_text_weights(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, e in header.items():
            if not name.startswith(PREFIX) or name.endswith("position_ids"):
                continue
            start, end = e["data_offsets"]
            f.seek(base + start)
            raw = f.read(end - start)
            if e["dtype"] == "BF16":
                bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
                arr = bits.view(np.float32)
            else:
                arr = np.frombuffer(raw, dtype=DTYPES[e["dtype"]]).astype(np.float32)
            out[name[len(PREFIX):]] = torch.from_numpy(arr.reshape(e["shape"]).copy())
        return out


def linear(w, name):
    return w[name + ".weight"], w[name + ".bias"]


def encode(w, tokens, skip):
    width = w["embeddings.token_embedding.weight"].shape[1]
    layers = 0
    while ("encoder.layers.%d.layer_norm1.weight" % layers) in w:
        layers += 1
    heads = width // 64
    ids = torch.tensor(tokens).unsqueeze(0)
    x = w["embeddings.token_embedding.weight"][ids] + w["embeddings.position_embedding.weight"][: len(tokens)]
    mask = torch.full((len(tokens), len(tokens)), float("-inf")).triu(1)

    def norm(t, name):
        ln = torch.nn.LayerNorm(width, eps=1e-5)
        ln.weight.data, ln.bias.data = w[name + ".weight"], w[name + ".bias"]
        return ln(t)

    for i in range(layers - (skip - 1)):
        p = "encoder.layers.%d." % i
        mha = torch.nn.MultiheadAttention(width, heads, batch_first=True)
        qw, qb = linear(w, p + "self_attn.q_proj")
        kw, kb = linear(w, p + "self_attn.k_proj")
        vw, vb = linear(w, p + "self_attn.v_proj")
        mha.in_proj_weight.data = torch.cat([qw, kw, vw])
        mha.in_proj_bias.data = torch.cat([qb, kb, vb])
        mha.out_proj.weight.data, mha.out_proj.bias.data = linear(w, p + "self_attn.out_proj")
        h = norm(x, p + "layer_norm1")
        x = x + mha(h, h, h, attn_mask=mask, need_weights=False)[0]
        h = norm(x, p + "layer_norm2")
        h = torch.nn.functional.linear(h, *linear(w, p + "mlp.fc1"))
        h = h * torch.sigmoid(1.702 * h)
        x = x + torch.nn.functional.linear(h, *linear(w, p + "mlp.fc2"))
    return norm(x, "final_layer_norm")[0]


def main():
    torch.set_grad_enabled(False)
    w = read_text_weights(sys.argv[1])
    with open(sys.argv[2]) as f:
        tokens = json.load(f)["tokens_cond"]
    y = encode(w, tokens, 2)[:ROWS].numpy().astype(np.float32)
    np.save(sys.argv[3], np.ascontiguousarray(y))
    # Sanity check of this script: clip skip 1 must reproduce cond.npy.
    if len(sys.argv) > 4:
        want = np.load(sys.argv[4])
        got = encode(w, tokens, 1).numpy()
        print("clip skip 1 vs", sys.argv[4], "max abs diff", float(np.abs(got - want).max()))


if __name__ == "__main__":
    main()
