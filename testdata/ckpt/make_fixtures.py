"""Writes the small PyTorch fixtures under testdata/ckpt with real torch.

Run from this folder: python3 make_fixtures.py   (made with torch 1.13.0a0, Debian python3-torch)

tiny_lightning.ckpt  - a Lightning-style dict: global_step, epoch, a nested
                       state_dict with f32/f16/bf16/int64/bool tensors, a
                       transposed (non-contiguous) view, a view with a storage
                       offset, a tensor sharing its storage, and optimizer junk.
tiny_plain.pth       - a plain OrderedDict state dict saved with protocol 4.
"""
import collections
import torch

base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 8
sd = collections.OrderedDict()
sd["model.w32"] = base.clone()
sd["model.w16"] = (base - 1).half()
sd["model.wbf"] = (base * 2).to(torch.bfloat16)
sd["model.ids"] = torch.arange(5, dtype=torch.int64).reshape(1, 5)
sd["model.mask"] = torch.tensor([True, False, True])
sd["model.t"] = base.t()  # [6, 4], strides (1, 6)
sd["model.row2"] = base[2]  # [6], storage offset 12
sd["model.shared"] = base  # shares storage with model.t and model.row2
sd["model.scalar"] = torch.tensor(3.5)
ckpt = {
    "epoch": 7,
    "global_step": 123456,
    "pytorch-lightning_version": "1.9.0",
    "state_dict": sd,
    "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0, 1]}]}],
    "lr_schedulers": [],
}
torch.save(ckpt, "tiny_lightning.ckpt")

plain = collections.OrderedDict()
plain["conv.weight"] = torch.linspace(-1, 1, 2 * 3 * 3 * 3).reshape(2, 3, 3, 3).half()
plain["conv.bias"] = torch.tensor([0.5, -0.25]).half()
torch.save(plain, "tiny_plain.pth", pickle_protocol=4)
