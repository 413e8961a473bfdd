#!/usr/bin/env python3
"""transform.py SRC.cu OUT.cpp: rewrite a kernel file for the host emulation
in emu.h: shared memory becomes function statics (or the emulated dynamic
buffer) and <<<...>>> launches become emu::launch(...) calls."""
import re
import sys

src = open(sys.argv[1]).read()
src = src.replace("extern __shared__ __align__(128) unsigned char smem[];",
                  "unsigned char *smem = emu::dyn_smem();")
src = src.replace("__shared__", "static")
src = re.sub(r"([A-Za-z_][\w:]*(?:<[^<>;()]*>)?)<<<", r"emu::launch(\1, ", src)
src = src.replace(">>>(", ")(")
if "<<<" in src or ">>>" in src:
    sys.exit(f"{sys.argv[1]}: launch syntax left after the rewrite")
open(sys.argv[2], "w").write(src)
