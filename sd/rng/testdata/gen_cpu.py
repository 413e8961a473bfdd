# Generates the pinned torch.randn (CPU) values in this directory.
# Run with PyTorch 1.13 (Debian bookworm python3-torch) and NumPy:
#   python3 gen_cpu.py                          # x86 with AVX2: AVX2 normal_fill
#   ATEN_CPU_CAPABILITY=default python3 gen_cpu.py   # portable normal_fill
# The capability actually used is recorded in the output names.
import os
import numpy as np
import torch

cap = "default" if os.environ.get("ATEN_CPU_CAPABILITY") == "default" else "avx2"

def save(name, t):
    np.save(f"cpu_{cap}_{name}.npy", t.reshape(-1).numpy().astype(np.float32))

# One call per size, each from a fresh torch.manual_seed.
for seed, shape in [(0, (8,)), (0, (16,)), (0, (17,)), (0, (100,)), (42, (1, 4, 64, 64)),
                    (2024, (4, 24, 32)), (2**40 + 7, (33,))]:
    torch.manual_seed(seed)
    name = f"seed{seed}_" + "x".join(map(str, shape))
    save(name, torch.randn(*shape))

# A stream: several calls on one seeded generator, concatenated. Mixes the
# scalar path (< 16, with its cached second value) and the chunked path.
torch.manual_seed(7)
parts = [torch.randn(n) for n in (3, 20, 5, 1, 16, 2, 31)]
save("stream7_3_20_5_1_16_2_31", torch.cat(parts))
