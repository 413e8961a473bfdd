# Generates openclip_block/*.npy: one OpenCLIP text residual block (as
# open_clip's ResidualAttentionBlock: ln_1, nn.MultiheadAttention with the
# fused in_proj and a causal mask, ln_2, mlp c_fc -> exact GELU -> c_proj)
# with random weights, its input and its output.
# Run with PyTorch 1.13 (Debian bookworm python3-torch) and NumPy:
#   cd sd/clip/testdata && python3 gen_openclip_block.py
from collections import OrderedDict
import os
import numpy as np
import torch
from torch import nn

C, HEADS, FF, L, B = 64, 2, 256, 6, 2


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(C)
        self.attn = nn.MultiheadAttention(C, HEADS)
        self.ln_2 = nn.LayerNorm(C)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(C, FF)), ("gelu", nn.GELU()), ("c_proj", nn.Linear(FF, C))]))

    def forward(self, x, mask):  # x: [L, B, C], sequence first as open_clip
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


torch.manual_seed(0)
blk = Block().double()
with torch.no_grad():
    for name, p in blk.named_parameters():
        p.copy_(torch.randn_like(p) * (0.5 if "ln_" in name and "weight" in name else 0.1))
        if "ln_" in name and "weight" in name:
            p.add_(1.0)
        p.copy_(p.float().double())  # the float32 values that are saved
x = torch.randn(B, L, C, dtype=torch.float64).float().double()
mask = torch.empty(L, L, dtype=torch.float64).fill_(float("-inf")).triu_(1)
with torch.no_grad():
    y = blk(x.transpose(0, 1), mask).transpose(0, 1)

out = "openclip_block"
os.makedirs(out, exist_ok=True)
for name, p in blk.state_dict().items():
    np.save(os.path.join(out, name + ".npy"), p.numpy().astype(np.float32))
np.save(os.path.join(out, "x.npy"), x.numpy().astype(np.float32))
np.save(os.path.join(out, "y.npy"), y.numpy().astype(np.float32))
