"""Loads a checkpoint written by gosd's WriteTorchZip with real torch.load and
prints one line per tensor: name, dtype, shape, sum (float64).

Used by hand (or by a test when GOSD_TORCH_PYTHON names a python with torch):
    python3 verify_torch.py some.pth
"""
import sys
import torch

obj = torch.load(sys.argv[1], map_location="cpu", weights_only=False) if "weights_only" in torch.load.__code__.co_varnames else torch.load(sys.argv[1], map_location="cpu")
sd = obj.get("state_dict", obj)
for name in sorted(sd):
    t = sd[name]
    print(name, str(t.dtype).replace("torch.", ""), list(t.shape), "%.6f" % t.double().sum().item())
