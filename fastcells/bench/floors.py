"""Floors: the least time a workload could take on this machine, from bytes and FLOPs.

Gate math is memory-bound: its floor is the bytes the fused kernels must move (each input
read once, each output written once) over the machine's copy bandwidth. The traffic is
counted in planes, one plane being a (B, C, H, W) tensor:

============  ===========================================  ====================================
cell          forward: reads / writes                      backward: reads / writes
============  ===========================================  ====================================
ConvLSTM,     z 4, c 1 / h 1, c 1, activations 4           dh 1, dc 1, activations 4, c_prev 1,
Conv-TT-LSTM                                               c 1 / dz 4, dc_prev 1
ST-LSTM       zx 7, zh 4, zm 3, c 1, m 1 / [c; m] 2,       d[c; m] 2, d_o 1, activations 6,
              o_partial 1, activations 6; output gate:     c 1, m 1 / dzx 7, dzh 4, dzm 3,
              3 / 3                                        dc 1, dm 1; output gate: 3 / 2
MK-LSTM       z1 4, z2 4, c1 1, c2 1 / [c1; c2] 2,         d[c1; c2] 2, d_o 1, activations 6,
              o_partial 1, activations 6; output gate:     c1 1, c2 1 / dz1 4, dz2 4, dc1 1,
              3 / 3                                        dc2 1; output gate: 3 / 2
============  ===========================================  ====================================

A cell step adds its convolutions, which are compute-bound: their floor is their FLOPs
(counted by ``torch.utils.flop_counter`` on the reference step, forward and backward,
2 flops per multiply-add) at the rate of a large matrix product on this machine. The step
floor is the sum of the two (the gates wait for the convolutions that produce their
inputs, and the next convolutions for the gates). ``fraction = floor / measured``: 1.0
would be a kernel running at the machine's roof.
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from .workloads import Size, build_cell, random_state

# (reads, writes) of the fused gate kernels, in (B, C, H, W) planes
GATE_PLANES = {
    "convlstm": {"fwd": (5, 6), "bwd": (8, 5)},
    "stlstm": {"fwd": (16 + 3, 9 + 3), "bwd": (11 + 3, 16 + 2)},
    "mklstm": {"fwd": (10 + 3, 9 + 3), "bwd": (11 + 3, 10 + 2)},
}
GATE_PLANES["convttlstm"] = GATE_PLANES["convlstm"]


def gate_bytes(cell: str, size: Size, dtype=torch.float32) -> dict[str, int]:
    """Bytes the fused gate kernels move: ``{"fwd": ..., "fwd+bwd": ...}``."""
    plane = (size.batch * size.channels * size.height * size.width
             * torch.empty((), dtype=dtype).element_size())
    fwd = sum(GATE_PLANES[cell]["fwd"]) * plane
    return {"fwd": fwd, "fwd+bwd": fwd + sum(GATE_PLANES[cell]["bwd"]) * plane}


def step_flops(cell: str, size: Size) -> dict[str, int]:
    """Convolution/matmul flops of one cell step: ``{"fwd": ..., "fwd+bwd": ...}``.

    Counted on a 1 x 8 x 8 reference step and scaled by B * H * W ("same" padding, stride
    1: every output pixel costs the same), with the step's input needing a gradient.
    """
    probe = Size(1, size.channels, 8, 8)
    module = build_cell(cell, "reference", size.channels)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, size.channels, 8, 8, generator=gen, requires_grad=True)
    state, _ = random_state(module, probe, "cpu", torch.float32, gen)
    counter = FlopCounterMode(display=False)
    with counter:
        h = module(x, state)[0]
    fwd = counter.get_total_flops()
    with counter:
        h.backward(torch.ones_like(h))
    bwd = counter.get_total_flops()
    scale = size.batch * size.height * size.width // 64
    return {"fwd": fwd * scale, "fwd+bwd": (fwd + bwd) * scale}


def floor_seconds(kind: str, cell: str, size: Size, dtype, roofs: dict) -> dict:
    """``{"fwd": s, "fwd+bwd": s, "bytes": {...}, "flops": {...}}`` for ``kind`` "gates" or
    "step", with ``roofs`` from :func:`fastcells.bench.timing.measure_roofs`."""
    moved = gate_bytes(cell, size, dtype)
    flops = step_flops(cell, size) if kind == "step" else {"fwd": 0, "fwd+bwd": 0}
    out = {mode: moved[mode] / roofs["bandwidth"] + flops[mode] / roofs["matmul"]
           for mode in ("fwd", "fwd+bwd")}
    return {**out, "bytes": moved, "flops": flops}
