"""Compiles the fused conv + gates kernel for sm_90 (H100) without a GPU, as a real launch
would: the launcher runs on CPU tensors with a capturing ``launch``, and the captured
arguments are specialized like Triton's JIT does (ints equal to 1 become constants, ints and
pointers divisible by 16 get the divisibility hint). Prints one ``compiled`` line per dtype
with the kernel's registers and stack (spill) bytes from cuobjdump.

Run without TRITON_INTERPRET (the interpreter replaces ``triton.jit``); used by
tests/test_triton_conv_gates.py. ``python tests/sm90_compile.py C K`` picks other sizes.
"""
import os
import subprocess
import sys
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget

from fastcells.kernels import conv_gates

TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16",
         torch.float64: "fp64"}
BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


class _Capture:
    """A ``launch`` that records the kernel call instead of running it."""
    last = None

    def __init__(self, kernel):
        self.kernel = kernel

    def __getitem__(self, grid):
        def call(*args, **kwargs):
            _Capture.last = (self.kernel, args, kwargs)
        return call


def compile_for_sm90(kernel, args, kwargs):
    names = kernel.arg_names
    options = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
    signature, constexprs, attrs = {}, dict(kwargs), {}
    for i, (name, arg) in enumerate(zip(names, args)):
        if isinstance(arg, torch.Tensor):
            signature[name] = "*" + TYPES[arg.dtype]
            attrs[(i,)] = [["tt.divisibility", 16]]  # torch allocations are 16-aligned
        elif isinstance(arg, float):
            signature[name] = "fp32"
        elif arg == 1:
            signature[name] = "constexpr"
            constexprs[name] = 1
        else:
            signature[name] = "i32"
            if arg % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    for name in kwargs:
        signature[name] = "constexpr"
    src = triton.compiler.ASTSource(
        fn=kernel, signature=signature, attrs=attrs,
        constexprs={(names.index(k),): v for k, v in constexprs.items()})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)


def resource_usage(compiled) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        out = subprocess.run([os.path.join(BIN, "cuobjdump"), "-res-usage", path],
                             capture_output=True, text=True, check=True).stdout
    return " ".join(w for line in out.splitlines() if "REG:" in line
                    for w in line.split() if w.startswith(("REG:", "STACK:")))


def main(C: int = 32, K: int = 3, B: int = 4, cin: int = 1, H: int = 64, W: int = 64):
    for dtype in TYPES:
        x = torch.randn(B, cin, H, W, dtype=dtype)
        h, c = torch.randn(2, B, C, H, W, dtype=dtype)
        w = torch.randn(4 * C, cin + C, K, K, dtype=dtype)
        conv_gates.forward(_Capture, x, h, c, w, torch.randn(4 * C, dtype=dtype), None,
                           torch.randn(3, C, dtype=dtype), 0.0)
        kernel, args, kwargs = _Capture.last
        tiles = {k: v for k, v in kwargs.items() if k.startswith(("BLOCK", "num_"))}
        compiled = compile_for_sm90(kernel, args, dict(kwargs))
        print(f"compiled {TYPES[dtype]} C={C} K={K} {tiles} shared={compiled.metadata.shared} "
              f"{resource_usage(compiled)}", flush=True)


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
