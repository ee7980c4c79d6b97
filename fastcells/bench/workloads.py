"""What is timed: the gate math alone and one whole cell step, per cell, size and variant.

A *variant* names what computes the workload:

- ``"reference"``: the eager reference backend (the baseline);
- ``"compiled"``: ``torch.compile`` of that same reference code;
- a fused backend name (``"cpp"``, ``"triton"``, ``"cuda"``): its kernels;
- ``"<backend>_memeff"`` (cell steps only): that backend with ``memory_efficient=True``.

Each workload builds its inputs once and exposes ``forward()`` (the forward of a training
step: autograd records the graph) and ``forward_backward()`` (forward, then the gradients
of every input and parameter).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

import fastcells as fc
from fastcells import backends
from fastcells.ops import GATES
from fastcells.utils import saved_tensor_bytes

CELLS = {
    "convlstm": (fc.ConvLSTMCell, fc.ConvLSTM),
    "stlstm": (fc.SpatioTemporalLSTMCell, fc.SpatioTemporalLSTM),
    "mklstm": (fc.MKLSTMCell, fc.MKLSTM),
    "convttlstm": (fc.ConvTTLSTMCell, fc.ConvTTLSTM),
}
# the gate ops each cell's gate math calls (Conv-TT-LSTM's gates are ConvLSTM's)
GATE_OPS = {"convlstm": ("convlstm",), "convttlstm": ("convlstm",),
            "stlstm": ("stlstm", "output"), "mklstm": ("mklstm", "output")}
MODES = ("fwd", "fwd+bwd")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
          "fp64": torch.float64}


@dataclass(frozen=True)
class Size:
    """Batch, channels (input = hidden) and frame size of a cell workload."""

    batch: int = 4
    channels: int = 32
    height: int = 64
    width: int = 64

    def __str__(self) -> str:
        return f"B={self.batch}, C={self.channels}, {self.height}x{self.width}"

    def as_dict(self) -> dict:
        return asdict(self)


# The papers' settings: MS-LSTM's ablation/Moving MNIST (B=4, C=32, 64x64), a larger batch
# and width at the same resolution, and the German radar set of MS-LSTM Section 5.5:
# frames interpolated to 180x180, 32 channels, batch 4 (one sequence per GPU on 4 GPUs).
SIZES = {
    "small": Size(4, 32, 64, 64),
    "large": Size(16, 64, 64, 64),
    "radar": Size(4, 32, 180, 180),
}
QUICK_SIZE = Size(2, 16, 32, 32)


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


def fused_backends(device: torch.device, dtype: torch.dtype,
                   interpreter: bool = False) -> list[str]:
    """The fused backends that can be timed on ``device`` with ``dtype``.

    Every backend :func:`fastcells.backends.supports` accepts, except Triton on a CPU: there
    it runs in the Triton interpreter (``TRITON_INTERPRET=1``), a slow test vehicle whose
    timings mean nothing; ``interpreter=True`` keeps it (the GPU suite's dry run, which
    checks that the benchmark code runs, not what it measures).
    """
    device = torch.device(device)
    return [b for b in backends.BACKENDS
            if b != "reference" and backends.supports(b, device, dtype)
            and (interpreter or not (b == "triton" and device.type != "cuda"))]


def auto_backend(cell: str, device: torch.device, dtype: torch.dtype) -> str:
    """What ``backend="auto"`` picks for ``cell`` (the backend users get by default)."""
    return backends.resolve("auto", torch.device(device), dtype, CELLS[cell][0].kind)


def gate_variants(cell: str, device, dtype, interpreter: bool = False) -> list[str]:
    """reference, compiled and every fused backend that implements all of the cell's ops."""
    fused = [b for b in fused_backends(device, dtype, interpreter)
             if all(getattr(GATES.get(b), op, None) is not None for op in GATE_OPS[cell])]
    return ["reference", "compiled", *fused]


def step_variants(cell: str, device, dtype, interpreter: bool = False) -> list[str]:
    """reference, compiled, every fused backend, and ``auto``'s backend memory-efficient."""
    fused = fused_backends(device, dtype, interpreter)
    auto = auto_backend(cell, device, dtype)
    memeff = [f"{auto}_memeff"] if auto != "reference" else ["reference_memeff"]
    return ["reference", "compiled", *fused, *memeff]


def parse_variant(variant: str) -> tuple[str, bool, bool]:
    """``variant`` -> (backend, compiled, memory_efficient)."""
    if variant == "compiled":
        return "reference", True, False
    backend, _, suffix = variant.partition("_")
    if backend not in backends.BACKENDS or suffix not in ("", "memeff"):
        raise ValueError(f"variant must be 'compiled', a backend {backends.BACKENDS} or "
                         f"'<backend>_memeff', got {variant!r}")
    return backend, False, suffix == "memeff"


@dataclass
class Workload:
    """A forward and a backward over inputs built once.

    ``forward()`` returns the outputs; ``backward(outputs)`` computes the gradients;
    ``saved_bytes()`` counts what autograd keeps for backward in one forward (unique
    storages, parameters excluded; ``None`` for compiled code, which
    ``saved_tensors_hooks`` cannot see into).
    """

    forward: Callable[[], tuple]
    backward: Callable[[tuple], None]
    saved_bytes: Callable[[], int | None]

    def fn(self, mode: str) -> Callable[[], None]:
        """The zero-argument callable timed for ``mode`` ("fwd" or "fwd+bwd")."""
        if mode == "fwd":
            return lambda: self.forward()
        if mode == "fwd+bwd":
            return lambda: self.backward(self.forward())
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _compile(fn, compile_backend: str):
    # dynamic=False: every size gets static-shape code, as a user's fixed-size training does
    return torch.compile(fn, backend=compile_backend, dynamic=False)


def _gate_math(cell: str, g) -> Callable:
    """The cell's whole pointwise stage as a function of its pre-activations and memories."""
    if cell in ("convlstm", "convttlstm"):
        def run(z, c):
            return g.convlstm(z, c, None, 0.0)
    elif cell == "stlstm":
        def run(zx, zh, zm, c, m, zo, zl):
            c, m, _, o_partial, _ = g.stlstm(zx, zh, zm, c, m)
            return g.output(o_partial, zo, zl), c, m
    elif cell == "mklstm":
        def run(z1, z2, c1, c2, zo, zl):
            c1, c2, _, o_partial = g.mklstm(z1, z2, c1, c2)
            return g.output(o_partial, zo, zl), c1, c2
    else:
        raise ValueError(f"cell must be one of {list(CELLS)}, got {cell!r}")
    return run


# input planes of each cell's gate math, in units of C channels
_GATE_INPUTS = {"convlstm": (4, 1), "convttlstm": (4, 1), "stlstm": (7, 4, 3, 1, 1, 1, 1),
                "mklstm": (4, 4, 1, 1, 1, 1)}


def gate_workload(cell: str, variant: str, size: Size, device="cpu",
                  dtype=torch.float32, compile_backend: str = "inductor") -> Workload:
    """The gate math of ``cell`` alone (every pointwise stage of one step)."""
    backend, compiled, memeff = parse_variant(variant)
    if memeff:
        raise ValueError("memory_efficient applies to cell steps, not to the gate math")
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {list(CELLS)}, got {cell!r}")
    ops = GATES.get(backend)
    if ops is None or any(getattr(ops, op, None) is None for op in GATE_OPS[cell]):
        raise ValueError(f"backend {backend!r} has no gate ops {GATE_OPS[cell]} for {cell}")
    B, C, H, W = size.batch, size.channels, size.height, size.width
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(B, k * C, H, W, generator=gen).to(device, dtype).requires_grad_()
              for k in _GATE_INPUTS[cell]]
    math = _gate_math(cell, ops)
    run = _compile(math, compile_backend) if compiled else math
    grads = [torch.randn(B, C, H, W, generator=gen).to(device, dtype) for _ in range(3)]

    def forward():
        return run(*inputs)

    def backward(outs):
        torch.autograd.grad(outs, inputs, grads[:len(outs)])

    def saved():
        return None if compiled else saved_tensor_bytes(lambda: math(*inputs))

    return Workload(forward, backward, saved)


def build_cell(cell: str, variant: str, channels: int, device="cpu", dtype=torch.float32):
    """A cell module of ``variant`` (weights from seed 0, identical across variants)."""
    backend, _, memeff = parse_variant(variant)
    torch.manual_seed(0)
    module = CELLS[cell][0](channels, channels, backend=backend, memory_efficient=memeff)
    return module.to(device, dtype)


def random_state(module, size: Size, device, dtype, gen: torch.Generator):
    """A random state for ``module`` and the leaf tensors it is made of."""
    shape = (size.batch, module.hidden_size, size.height, size.width)

    def t():
        return torch.randn(shape, generator=gen).to(device, dtype).requires_grad_()

    if isinstance(module, fc.ConvTTLSTMCell):
        hist, c = tuple(t() for _ in range(module.steps)), t()
        return (hist[-1], c, hist), [*hist, c]
    state = tuple(t() for _ in module.state_names)
    return state, list(state)


def step_workload(cell: str, variant: str, size: Size, device="cpu", dtype=torch.float32,
                  compile_backend: str = "inductor") -> Workload:
    """One cell step (convolutions + gates) from a random state; the input needs a gradient,
    as in every layer but the first."""
    _backend, compiled, _ = parse_variant(variant)
    module = build_cell(cell, variant, size.channels, device, dtype)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(size.batch, size.channels, size.height, size.width,
                    generator=gen).to(device, dtype).requires_grad_()
    state, leaves = random_state(module, size, device, dtype, gen)
    wrt = [x, *leaves, *module.parameters()]
    grad_h = torch.randn(x.shape, generator=gen).to(device, dtype)
    run = _compile(module, compile_backend) if compiled else module

    def forward():
        return run(x, state)

    def backward(outs):
        torch.autograd.grad(outs[0], wrt, grad_h, allow_unused=True)

    def saved():
        if compiled:
            return None
        return saved_tensor_bytes(lambda: module(x, state), exclude=module.parameters())

    return Workload(forward, backward, saved)


def stack_saved_bytes(cell: str, variant: str, size: Size, device="cpu",
                      dtype=torch.float32, layers: int = 2, steps: int = 6) -> int:
    """Saved-for-backward bytes of a ``layers``-layer stack unrolled over ``steps`` frames
    (parameters excluded; the frames need no gradient, as in training)."""
    backend, compiled, memeff = parse_variant(variant)
    if compiled:
        raise ValueError("saved_tensors_hooks cannot see into compiled code")
    torch.manual_seed(0)
    layer = CELLS[cell][1](size.channels, size.channels, num_layers=layers, backend=backend,
                           memory_efficient=memeff).to(device, dtype)
    x = torch.randn(size.batch, steps, size.channels, size.height, size.width).to(device, dtype)
    return saved_tensor_bytes(lambda: layer(x), exclude=layer.parameters())
