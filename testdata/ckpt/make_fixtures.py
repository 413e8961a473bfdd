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

# tiny_inert.ckpt - bookkeeping objects real SD 1.x Lightning checkpoints carry
# (a ModelCheckpoint callback, a numpy scalar), which the Go reader accepts as
# inert placeholders. pytorch_lightning is not installed here, so a stand-in
# class is registered under the same module path; the pickle bytes are the same.
import sys, types
import numpy as np

for name in ["pytorch_lightning", "pytorch_lightning.callbacks"]:
    sys.modules[name] = types.ModuleType(name)
mod = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")


class ModelCheckpoint:
    def __init__(self):
        self.monitor = None
        self.best_model_score = None
        self.save_top_k = -1


ModelCheckpoint.__module__ = mod.__name__
mod.ModelCheckpoint = ModelCheckpoint
sys.modules[mod.__name__] = mod
inert = {
    "global_step": 470000,
    "callbacks": {ModelCheckpoint: {"best_model_path": "", "monitor": None}},
    "cb_object": ModelCheckpoint(),
    "loss": np.float64(0.125),
    "state_dict": collections.OrderedDict([("model.diffusion_model.out.2.bias", torch.tensor([1.0, -1.0, 0.5, 2.0]))]),
}
torch.save(inert, "tiny_inert.ckpt")
