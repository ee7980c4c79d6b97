"""The CUDA C++ backend (csrc/cuda/, backend="cuda"), tested with or without a GPU.

1. Compile: every .cu compiles with the machine's nvcc for sm_80 and sm_90 with setup.py's
   flags, against torch's headers; the bindings compile against torch's and CUDA's headers;
   and every kernel launcher the bindings call is instantiated by a .cu (a missing one
   would only show as an undefined symbol when the extension is imported on a GPU machine).
2. Device "emulated": tests/cuda_emulation.cpp builds the extension's torch code
   (csrc/cuda/ops.h) and the kernels' __host__ __device__ element code for the CPU, and
   replays the kernels' grids thread by thread. The Python wrappers (``*_cuda``) run on it
   unchanged, so everything but the kernel launch lines is checked on CPU tensors.
3. Device "cuda": the same tests on a GPU with the built extension (skipped without one).
"""
from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import fastcells as fc
from fastcells import _ext, backends, ops
from fastcells.ops import (causal_lstm_gates, convlstm_gates, dual_memory_gates, ghu_gates,
                           mim_gates, output_gate)

from .conftest import GPU_TESTS
from .helpers import (CELL_CONFIGS, RTOL, assert_close, flat_outputs, make_cells, randomize,
                      rel_error)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_DIR = os.path.join(ROOT, "csrc", "cuda")
C = 5


def _load_setup():
    """setup.py as a module (its setup() call only runs as __main__)."""
    spec = importlib.util.spec_from_file_location("fastcells_setup", os.path.join(ROOT, "setup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SETUP = _load_setup()


# ============================================================================ devices
def _emulation_build_dir():
    # Under the repository's (ignored) build/, so that repeated runs reuse the object file
    # and parallel checkouts do not share one.
    return os.path.join(ROOT, "build", f"cuda_emulation_{sys.implementation.cache_tag}")


@pytest.fixture(scope="module")
def emulation():
    """The host emulation extension, built once (15-40 s) and reused across runs.

    Its CPU kernels are also registered on the ``*_cuda`` torch.library ops (in this test
    process only), so that opcheck and fake-tensor checks run on CPU tensors."""
    from torch.utils.cpp_extension import load

    headers = sorted(glob.glob(os.path.join(CUDA_DIR, "*.cuh")) +
                     glob.glob(os.path.join(CUDA_DIR, "*.h")))
    sha = hashlib.sha256()
    for header in headers:
        with open(header, "rb") as f:
            sha.update(f.read())
    digest = sha.hexdigest()[:16]
    build_dir = _emulation_build_dir()
    os.makedirs(build_dir, exist_ok=True)
    module = load(
        name="fastcells_cuda_emulation",
        sources=[os.path.join(ROOT, "tests", "cuda_emulation.cpp")],
        extra_include_paths=[CUDA_DIR],
        # -O1: a quarter of -O2's build time; the emulated tensors are small. The digest
        # makes a header change rebuild even if ninja's dependency file were lost.
        extra_cflags=["-O1", f"-DFASTCELLS_CUDA_HEADERS_{digest}"],
        build_directory=build_dir,
    )
    module.set_poison_outputs(True)
    if not _CPU_KERNELS_REGISTERED:  # once per process: the fixture is per module
        for op, impl in _CUDA_OPS:
            op.register_kernel("cpu")(impl)
        _CPU_KERNELS_REGISTERED.append(True)
    return module


_CPU_KERNELS_REGISTERED: list = []


_CUDA_OPS = [
    (convlstm_gates._cuda_forward_op, convlstm_gates._cuda_forward_impl),
    (convlstm_gates._cuda_backward_op, convlstm_gates._cuda_backward_impl),
    (dual_memory_gates._stlstm_cuda_op, dual_memory_gates._stlstm_cuda_impl),
    (dual_memory_gates._stlstm_cuda_backward_op, dual_memory_gates._stlstm_cuda_backward_impl),
    (dual_memory_gates._mklstm_cuda_op, dual_memory_gates._mklstm_cuda_impl),
    (dual_memory_gates._mklstm_cuda_backward_op, dual_memory_gates._mklstm_cuda_backward_impl),
    (output_gate._cuda_forward_op, output_gate._cuda_forward_impl),
    (output_gate._cuda_backward_op, output_gate._cuda_backward_impl),
    (mim_gates._mims_cuda_op, mim_gates._mims_cuda_impl),
    (mim_gates._mims_cuda_backward_op, mim_gates._mims_cuda_backward_impl),
    (mim_gates._block_cuda_op, mim_gates._block_cuda_impl),
    (mim_gates._block_cuda_backward_op, mim_gates._block_cuda_backward_impl),
    (causal_lstm_gates._c_cuda_op, causal_lstm_gates._c_cuda_impl),
    (causal_lstm_gates._c_cuda_backward_op, causal_lstm_gates._c_cuda_backward_impl),
    (causal_lstm_gates._m_cuda_op, causal_lstm_gates._m_cuda_impl),
    (causal_lstm_gates._m_cuda_backward_op, causal_lstm_gates._m_cuda_backward_impl),
    (causal_lstm_gates._out_cuda_op, causal_lstm_gates._out_cuda_impl),
    (causal_lstm_gates._out_cuda_backward_op, causal_lstm_gates._out_cuda_backward_impl),
    (ghu_gates._cuda_forward_op, ghu_gates._cuda_forward_impl),
    (ghu_gates._cuda_backward_op, ghu_gates._cuda_backward_impl),
]


def _gpu_skip_reason():
    if not torch.cuda.is_available():
        return "needs a CUDA GPU"
    if not _ext.cuda_available() and not GPU_TESTS:
        # On the GPU suite's run (FASTCELLS_GPU_TESTS=1) a missing extension fails these
        # tests, with the import error, instead of skipping them.
        return "fastcells._C_cuda is not built (pip install --no-build-isolation -e .)"
    return None


requires_gpu = pytest.mark.skipif(_gpu_skip_reason() is not None,
                                  reason=str(_gpu_skip_reason()))


@pytest.fixture(params=["emulated", "cuda"])
def device(request, monkeypatch):
    """Where the CUDA backend's kernels run: "cpu" (host emulation) or "cuda" (the GPU)."""
    if request.param == "cuda":
        reason = _gpu_skip_reason()
        if reason:
            pytest.skip(f"{reason} (the [emulated] twin ran the same checks on CPU)")
        return "cuda"
    emu = request.getfixturevalue("emulation")
    monkeypatch.setattr(_ext, "cuda_extension", lambda: emu)
    monkeypatch.setattr(_ext, "cuda_available", lambda: True)
    cpu_supports = backends.supports

    def supports(backend, device, dtype):  # let cells choose backend "cuda" on CPU tensors
        if backend == "cuda":
            return device.type == "cpu" and dtype in backends._GPU_DTYPES
        return cpu_supports(backend, device, dtype)

    monkeypatch.setattr(backends, "supports", supports)
    return "cpu"


# ============================================================================ op table
OPS = {
    # name: (reference, cuda, channel multiples of the tensor inputs, extra args)
    "convlstm": (ops.convlstm_gates_ref, ops.convlstm_gates_cuda, (4, 1), (None, 0.0)),
    "convlstm_fb": (ops.convlstm_gates_ref, ops.convlstm_gates_cuda, (4, 1), (None, 1.5)),
    "convlstm_peephole": (ops.convlstm_gates_ref, ops.convlstm_gates_cuda, (4, 1), ("peep", 0.7)),
    "stlstm": (ops.stlstm_gates_ref, ops.stlstm_gates_cuda, (7, 4, 3, 1, 1), (False,)),
    "stlstm_deltas": (ops.stlstm_gates_ref, ops.stlstm_gates_cuda, (7, 4, 3, 1, 1), (True,)),
    "mklstm": (ops.mklstm_gates_ref, ops.mklstm_gates_cuda, (4, 4, 1, 1), ()),
    "output": (ops.output_gate_ref, ops.output_gate_cuda, (1, 1, 1), ()),
    "causal_c": (ops.causal_c_gates_ref, ops.causal_c_gates_cuda, (7, 4, 3, 3, 1), (1.0,)),
    "causal_m": (ops.causal_m_gates_ref, ops.causal_m_gates_cuda, (4, 4, 1, 1), (0.5,)),
    "causal_output": (ops.causal_output_gate_ref, ops.causal_output_gate_cuda, (1, 1, 1), ()),
    "ghu": (ops.ghu_gates_ref, ops.ghu_gates_cuda, (2, 2, 1), ()),
}

LAYOUTS = ["contiguous", "channels_last", "channel_slice", "channels_last_slice", "strided",
           "transposed", "mixed"]


def _planes(b, k, h, w, dtype, device, layout, index=0):
    """A (b, k, h, w) tensor in one of the layouts users hand us."""
    def randn(*shape):
        return torch.randn(*shape, dtype=torch.float64).to(dtype=dtype, device=device)

    if layout == "mixed":  # inputs alternate: the kernels mix layouts in one launch
        layout = "channels_last" if index % 2 == 0 else "contiguous"
    if layout == "contiguous":
        return randn(b, k, h, w)
    if layout == "channels_last":
        return randn(b, k, h, w).contiguous(memory_format=torch.channels_last)
    if layout == "channel_slice":  # batch stride larger than k*h*w (the halves of [c; m])
        return randn(b, k + 3, h, w)[:, 2:2 + k]
    if layout == "channels_last_slice":
        return randn(b, k + 3, h, w).contiguous(memory_format=torch.channels_last)[:, 1:1 + k]
    if layout == "strided":  # every other channel: still read in place
        return randn(b, 2 * k, h, w)[:, ::2]
    if layout == "transposed":  # H and W do not collapse: the wrapper copies
        return randn(b, k, w, h).transpose(2, 3)
    raise ValueError(layout)


def _inputs(name, b, h, w, dtype, device, layout="contiguous"):
    _, _, mults, extra = OPS[name]
    xs = [_planes(b, m * C, h, w, dtype, device, layout, i) for i, m in enumerate(mults)]
    extra = tuple(torch.randn(3, C, dtype=torch.float64).to(dtype=dtype, device=device)
                  if e == "peep" else e for e in extra)
    return xs, extra



def _run(fn, xs, extra, weights=None, dtype=None):
    """Outputs of fn on copies of the inputs (cast to ``dtype`` if given) and, with weights,
    the gradients of sum(weights * outputs) w.r.t. every tensor input."""
    def prep(t):
        t = t.detach() if dtype is None else t.detach().to(dtype)
        return t.requires_grad_()

    leaves = [prep(x) for x in xs]
    extra = tuple(prep(e) if isinstance(e, torch.Tensor) else e for e in extra)
    out = flat_outputs(fn(*leaves, *extra))
    if weights is None:
        return out, None
    tensors = [*leaves, *[e for e in extra if isinstance(e, torch.Tensor)]]
    grads = torch.autograd.grad(out, tensors, [wt.to(o.dtype) for wt, o in zip(weights, out)])
    return out, grads


def _check_against_reference(name, xs, extra, dtype):
    """The contract (CELLS.md): float32/float64 within RTOL of the eager reference in the same
    dtype; float16/bfloat16 no worse than twice the eager same-dtype error, both measured
    against a float64 reference. Forward outputs and input gradients."""
    ref, cuda, _, _ = OPS[name]
    out_ref64, _ = _run(ref, xs, extra, dtype=torch.float64)
    weights = [torch.randn(o.shape, dtype=torch.float64).to(o.device) for o in out_ref64]
    _, grads_ref64 = _run(ref, xs, extra, weights, dtype=torch.float64)
    out_k, grads_k = _run(cuda, xs, extra, weights)
    out_e, grads_e = _run(ref, xs, extra, weights)
    assert len(out_k) == len(out_e)
    pairs = [(f"output {i}", *t) for i, t in enumerate(zip(out_k, out_e, out_ref64))]
    pairs += [(f"grad {i}", *t) for i, t in enumerate(zip(grads_k, grads_e, grads_ref64))]
    for label, kernel, eager, exact in pairs:
        assert kernel.dtype == dtype, label
        if dtype in RTOL:
            assert_close(kernel, eager, RTOL[dtype], f"{name} {label}")
        else:
            assert torch.isfinite(kernel).all(), f"{name} {label}: non-finite (unwritten?)"
            err, err_eager = rel_error(kernel, exact), rel_error(eager, exact)
            assert err <= 2 * err_eager, (
                f"{name} {label}: error {err:.2e} vs eager {dtype} {err_eager:.2e}")


# ============================================================================ kernels vs reference
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", list(OPS))
def test_matches_reference_layouts(device, name, layout):
    xs, extra = _inputs(name, 2, 9, 11, torch.float32, device, layout)
    _check_against_reference(name, xs, extra, torch.float32)


# (2, 23, 25): more elements than the emulated grid has threads, so every thread's
# grid-stride loop (and the peephole reduction's position loop) runs several times.
SHAPES = [(2, 9, 11), (1, 7, 5), (3, 1, 13), (2, 6, 1), (1, 1, 1), (2, 23, 25)]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", list(OPS))
def test_matches_reference_shapes(device, name, shape, layout):
    xs, extra = _inputs(name, *shape, torch.float32, device, layout)
    _check_against_reference(name, xs, extra, torch.float32)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last_slice"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64],
                         ids=str)
@pytest.mark.parametrize("name", list(OPS))
def test_matches_reference_dtypes(device, name, dtype, layout):
    xs, extra = _inputs(name, 2, 6, 7, dtype, device, layout)
    _check_against_reference(name, xs, extra, dtype)


@pytest.mark.parametrize("name", list(OPS))
def test_gradcheck_float64(device, name):
    _, cuda, _, _ = OPS[name]
    xs, extra = _inputs(name, 2, 3, 4, torch.float64, device)
    tensors = [t.requires_grad_() for t in [*xs, *[e for e in extra if isinstance(e, torch.Tensor)]]]
    n = len(xs)

    def fn(*ts):
        it = iter(ts[n:])
        args = [next(it) if isinstance(e, torch.Tensor) else e for e in extra]
        return tuple(flat_outputs(cuda(*ts[:n], *args)))

    assert torch.autograd.gradcheck(fn, tensors)


@pytest.mark.parametrize("name", list(OPS))
def test_unused_outputs_get_no_gradient(device, name):
    """Only the first output reaches the loss: the others' gradients count as zero."""
    ref, cuda, _, _ = OPS[name]
    xs, extra = _inputs(name, 2, 5, 6, torch.float64, device)
    xs = [x.requires_grad_() for x in xs]
    g_ref = torch.autograd.grad(flat_outputs(ref(*xs, *extra))[0].sum(), xs, allow_unused=True)
    g_cuda = torch.autograd.grad(flat_outputs(cuda(*xs, *extra))[0].sum(), xs, allow_unused=True)
    for a, e in zip(g_cuda, g_ref):
        if e is None:
            assert a is None or a.abs().max() == 0
        else:
            assert_close(a, e, RTOL[torch.float64])


@pytest.mark.parametrize("b,c,h,w", [(1, 1, 1, 1), (1, 3, 15, 17), (2, 7, 8, 16), (1, 2, 1, 257),
                                     (3, 4, 25, 40)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_peephole_gradient_reduction(device, b, c, h, w, layout):
    """The per-channel sum over (batch, position) of the peephole gradient: positions below,
    at and above one block (256), more channels than the emulated grid has rows (2), and
    more positions than a channel's blocks have threads (3000 > 2 * 256)."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format

    def randn(*shape):
        t = torch.randn(*shape, dtype=torch.float64).to(device)
        return t.contiguous(memory_format=fmt) if t.dim() == 4 else t

    z, c_prev, peep = randn(b, 4 * c, h, w), randn(b, c, h, w), randn(3, c)
    peep.requires_grad_()
    weights = randn(b, c, h, w), randn(b, c, h, w)
    outs = ops.convlstm_gates_cuda(z, c_prev, peep, 0.3)
    (grad,) = torch.autograd.grad(outs, [peep], weights)
    peep_ref = peep.detach().clone().requires_grad_()
    (grad_ref,) = torch.autograd.grad(ops.convlstm_gates_ref(z, c_prev, peep_ref, 0.3),
                                      [peep_ref], weights)
    assert grad.shape == (3, c) and grad.is_contiguous()
    assert_close(grad, grad_ref, RTOL[torch.float64])


# ============================================================================ layout and contract
def test_outputs_follow_the_input_layout(device):
    """channels_last in, channels_last out (no hidden copies for channels_last models), and
    the memories are views of one [c; m] buffer, as with the other backends."""
    xs, _ = _inputs("stlstm", 2, 4, 6, torch.float32, device, "channels_last")
    c, m, cm, o_partial, (delta_c, _) = ops.stlstm_gates_cuda(*xs, return_deltas=True)
    for t in (cm, o_partial, delta_c._base):
        assert t.is_contiguous(memory_format=torch.channels_last)
    assert c.data_ptr() == cm.data_ptr() and m._base is cm
    xs, _ = _inputs("convlstm", 2, 4, 6, torch.float32, device, "contiguous")
    h, c = ops.convlstm_gates_cuda(*xs)
    assert h.is_contiguous() and c.is_contiguous()


def test_channel_slices_are_read_in_place(device, monkeypatch):
    """The wrapper copies only layouts whose H and W do not collapse."""
    copies = []
    original = torch.Tensor.contiguous

    def counting(self, *args, **kwargs):
        copies.append(self.shape)
        return original(self, *args, **kwargs)

    xs, _ = _inputs("mklstm", 2, 4, 6, torch.float32, device, "channel_slice")
    monkeypatch.setattr(torch.Tensor, "contiguous", counting)
    ops.mklstm_gates_cuda(*xs)
    assert copies == []
    xs, _ = _inputs("mklstm", 2, 4, 6, torch.float32, device, "transposed")
    ops.mklstm_gates_cuda(*xs)
    assert len(copies) == 4


def test_argument_errors(device):
    ext = _ext.cuda_extension()
    z = torch.randn(2, 4 * C, 3, 4, device=device)
    c = torch.randn(2, C, 3, 4, device=device)
    with pytest.raises(RuntimeError, match="expected shape"):
        ext.convlstm_gates_forward(z[:, 1:], c, None, 0.0, False)
    with pytest.raises(RuntimeError, match="dtype"):
        ext.convlstm_gates_forward(z.double(), c, None, 0.0, False)
    with pytest.raises(RuntimeError, match="collapse"):
        ext.convlstm_gates_forward(z.transpose(2, 3).contiguous().transpose(2, 3), c, None, 0.0,
                                   False)
    with pytest.raises(RuntimeError, match="peephole"):
        ext.convlstm_gates_forward(z, c, torch.randn(3, C + 1, device=device), 0.0, False)
    with pytest.raises(RuntimeError, match="4-D"):
        ext.output_gate_forward(c[0], c[0], c[0], False)
    with pytest.raises(RuntimeError, match="supports float16"):
        ext.output_gate_forward(*(torch.ones(1, C, 2, 2, dtype=torch.int32, device=device),) * 3,
                                False)
    with pytest.raises(RuntimeError, match="expected a .* tensor, got one on meta"):
        ext.output_gate_forward(*(torch.ones(1, C, 2, 2, device="meta"),) * 3, False)


def test_gates_table_has_cuda():
    assert ops.GATES["cuda"].convlstm is ops.convlstm_gates_cuda
    assert ops.GATES["cuda"].stlstm is ops.stlstm_gates_cuda
    assert ops.GATES["cuda"].mklstm is ops.mklstm_gates_cuda
    assert ops.GATES["cuda"].output is ops.output_gate_cuda
    assert ops.GATES["cuda"].causal_c is ops.causal_c_gates_cuda
    assert ops.GATES["cuda"].causal_m is ops.causal_m_gates_cuda
    assert ops.GATES["cuda"].causal_output is ops.causal_output_gate_cuda
    assert ops.GATES["cuda"].ghu is ops.ghu_gates_cuda


# ============================================================================ torch.library
def _op_samples(device):
    def t(*shape, cl=False, rand=False):
        x = (torch.rand if rand else torch.randn)(*shape, device=device)
        return x.contiguous(memory_format=torch.channels_last) if cl else x

    z, c, g = t(2, 4 * C, 3, 5), t(2, C, 3, 5), t(2, C, 3, 5)
    z_cl, c_cl = t(2, 4 * C, 3, 5, cl=True), t(2, C, 3, 5, cl=True)
    peep = t(3, C)
    acts4, acts4_cl = t(2, 4 * C, 3, 5, rand=True), t(2, 4 * C, 3, 5, cl=True, rand=True)
    zx, zh, zm = (t(2, k * C, 3, 5) for k in (7, 4, 3))
    zx_cl = t(2, 7 * C, 3, 5, cl=True)
    acts6, acts2 = t(2, 6 * C, 3, 5, rand=True), t(2, 2 * C, 3, 5, rand=True)
    acts2_cl = t(2, 2 * C, 3, 5, cl=True, rand=True)
    f = torch.ops.fastcells
    return [
        (f.convlstm_gates_cuda.default, (z.requires_grad_(), c.clone().requires_grad_(), None, 0.5)),
        (f.convlstm_gates_cuda.default, (z_cl, c.clone().requires_grad_(), peep.requires_grad_(),
                                         0.0)),
        (f.convlstm_gates_cuda_backward.default, (g, g, acts4, c, c, peep.detach())),
        (f.convlstm_gates_cuda_backward.default, (g, c_cl, acts4_cl, c, c_cl, None)),
        (f.stlstm_gates_cuda.default, (zx.requires_grad_(), zh, zm, c, c, True, 0.0)),
        (f.stlstm_gates_cuda.default, (zx_cl, zh, zm.requires_grad_(), c_cl, c, False, 1.0)),
        (f.stlstm_gates_cuda_backward.default, (acts2, g, acts2, acts6, c, c)),
        (f.stlstm_gates_cuda_backward.default, (acts2, g, None, acts6, c, c)),
        (f.mklstm_gates_cuda.default, (z, z_cl.detach().clone().requires_grad_(), c, c)),
        (f.mklstm_gates_cuda_backward.default, (acts2, g, acts6, c, c)),
        (f.output_gate_cuda.default, (g.clone().requires_grad_(), g, g)),
        (f.output_gate_cuda.default, (g, g, c_cl.clone().requires_grad_())),
        (f.output_gate_cuda_backward.default, (g, acts2)),
        (f.output_gate_cuda_backward.default, (g, acts2_cl)),
        (f.causal_c_gates_cuda.default, (zx.detach().clone().requires_grad_(), zh, zm, zm,
                                         c.clone().requires_grad_(), 1.0)),
        (f.causal_c_gates_cuda.default, (zx_cl, zh, zm.detach().clone().requires_grad_(), zm,
                                         c_cl, 0.0)),
        (f.causal_c_gates_cuda_backward.default, (g, g, z.detach(), acts6[:, :3 * C], c)),
        (f.causal_m_gates_cuda.default, (z.detach().clone().requires_grad_(), z_cl, c, g, 1.0)),
        (f.causal_m_gates_cuda.default, (z_cl, z, c_cl.clone().requires_grad_(), c, 0.5)),
        (f.causal_m_gates_cuda_backward.default, (g, g, acts4)),
        (f.causal_m_gates_cuda_backward.default, (g, c_cl, acts4_cl)),
        (f.causal_output_gate_cuda.default, (g.clone().requires_grad_(), g, g)),
        (f.causal_output_gate_cuda.default, (g, g, c_cl.clone().requires_grad_())),
        (f.causal_output_gate_cuda_backward.default, (g, acts2_cl)),
        (f.ghu_gates_cuda.default, (acts2.clone().requires_grad_(), acts2, g)),
        (f.ghu_gates_cuda.default, (acts2_cl, acts2, c_cl.clone().requires_grad_())),
        (f.ghu_gates_cuda_backward.default, (g, acts2, c)),
        (f.ghu_gates_cuda_backward.default, (c_cl, acts2_cl, c)),
    ]


@pytest.mark.parametrize("i", range(28))
def test_opcheck(device, i):
    """Schema, fake kernels (shapes, strides and formats of the real outputs), autograd
    registration and AOT dispatch of every op."""
    op, args = _op_samples(device)[i]
    torch.library.opcheck(op, args)


# ============================================================================ cells
CELL_VARIANTS = {"default": {}, "memeff": {"memory_efficient": True}}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("variant", list(CELL_VARIANTS))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("config", list(CELL_CONFIGS))
def test_cell_matches_reference(device, config, layout, variant, dtype):
    """Every cell with backend="cuda" against backend="reference", three steps, forward and
    backward (inputs, initial state and parameters)."""
    ref, cuda = make_cells(config, [("reference", {}), ("cuda", CELL_VARIANTS[variant])],
                           dtype=dtype)
    ref.to(device)
    cuda.to(device)
    assert cuda.backend == "cuda"
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    b, h, w = 2, 9, 11

    def leaf(*shape):
        t = torch.randn(*shape, dtype=dtype, device=device)
        return t.contiguous(memory_format=fmt).requires_grad_()

    xs = [leaf(b, 3, h, w) for _ in range(3)]
    if isinstance(ref, fc.ConvTTLSTMCell):
        hist = tuple(leaf(b, ref.hidden_size, h, w) for _ in range(ref.steps))
        init = (hist[-1], leaf(b, ref.hidden_size, h, w), hist)
        init_leaves = [*hist, init[1]]
    else:
        init = tuple(leaf(b, ref.hidden_size, h, w) for _ in ref.state_names)
        init_leaves = list(init)
    deltas = isinstance(ref, fc.SpatioTemporalLSTMCell)

    def run(cell):
        produced, state = [], init
        for x in xs:
            if deltas:
                state, d = cell(x, state, return_deltas=True)
                produced.extend(d)
            else:
                state = cell(x, state)
            produced.extend([s for s in state if isinstance(s, torch.Tensor)][:3])
        return produced

    out_ref, out_cuda = run(ref), run(cuda)
    weights = [torch.randn_like(o) for o in out_ref]
    g_ref = torch.autograd.grad(out_ref, [*xs, *init_leaves, *ref.parameters()], weights,
                                allow_unused=True)
    g_cuda = torch.autograd.grad(out_cuda, [*xs, *init_leaves, *cuda.parameters()], weights,
                                 allow_unused=True)
    # CELLS.md: float32 within 1e-5 on CPU, 1e-3 on a GPU, where the convolutions around the
    # gates use TF32 by default.
    rtol = 1e-3 if device == "cuda" and dtype == torch.float32 else RTOL[dtype]
    for i, (a, e) in enumerate(zip(out_cuda, out_ref)):
        assert_close(a, e, rtol, f"output {i}")
    for i, (a, e) in enumerate(zip(g_cuda, g_ref)):
        assert (a is None) == (e is None), f"grad {i}"
        if e is not None:
            assert_close(a, e, rtol, f"grad {i}")


@pytest.mark.parametrize("variant", list(CELL_VARIANTS))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("kwargs", [{}, dict(bias=True, layer_norm=True, spatial_size=(9, 11))],
                         ids=["ghu", "ghu_bias_ln"])
def test_ghu_cell_matches_reference(device, kwargs, layout, variant):
    """PredRNN++'s gradient highway unit (forward(x, z) -> z, input_size == hidden_size: not
    in CELL_CONFIGS) with backend="cuda", three steps, all gradients, float64."""
    dtype = torch.float64
    ref = fc.GradientHighwayUnit(C, C, backend="reference", **kwargs).to(dtype)
    cuda = fc.GradientHighwayUnit(C, C, backend="cuda", **kwargs,
                                  **CELL_VARIANTS[variant]).to(dtype)
    randomize(ref)
    cuda.load_state_dict(ref.state_dict())
    ref.to(device)
    cuda.to(device)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format

    def leaf():
        t = torch.randn(2, C, 9, 11, dtype=dtype, device=device)
        return t.contiguous(memory_format=fmt).requires_grad_()

    xs, z0 = [leaf() for _ in range(3)], leaf()

    def run(cell):
        out, z = [], z0
        for x in xs:
            z = cell(x, z)
            out.append(z)
        return out

    out_ref, out_cuda = run(ref), run(cuda)
    weights = [torch.randn_like(o) for o in out_ref]
    g_ref = torch.autograd.grad(out_ref, [*xs, z0, *ref.parameters()], weights)
    g_cuda = torch.autograd.grad(out_cuda, [*xs, z0, *cuda.parameters()], weights)
    for i, (a, e) in enumerate(zip([*out_cuda, *g_cuda], [*out_ref, *g_ref])):
        assert_close(a, e, RTOL[dtype], f"tensor {i}")


def test_backend_cuda_without_gpu_or_extension_is_a_clear_error():
    if not _ext.cuda_available():
        with pytest.raises(ImportError, match="fastcells._C_cuda"):
            fc.ConvLSTMCell(3, 4, backend="cuda")
        return
    cell = fc.ConvLSTMCell(3, 4, backend="cuda")
    with pytest.raises(ValueError, match="CUDA tensors"):
        cell(torch.randn(1, 3, 5, 5))


# ============================================================================ GPU only
@requires_gpu
def test_many_elements_and_channels_on_gpu():
    """More elements than one grid of the real GPU has threads (every thread loops), and a
    peephole reduction over many channels and positions."""
    b, ch, h, w = 4, 96, 72, 80  # 2.2M elements > 132 SMs * 16 blocks * 256 threads
    z = torch.randn(b, 4 * ch, h, w, device="cuda")
    c_prev = torch.randn(b, ch, h, w, device="cuda")
    peep = torch.randn(3, ch, device="cuda")
    weights = [torch.randn(b, ch, h, w, device="cuda") for _ in range(2)]
    out_k, grads_k = _run(ops.convlstm_gates_cuda, [z, c_prev], (peep, 0.7), weights)
    out_r, grads_r = _run(ops.convlstm_gates_ref, [z, c_prev], (peep, 0.7), weights)
    for a, e in zip([*out_k, *grads_k], [*out_r, *grads_r]):
        assert_close(a, e, RTOL[torch.float32])


@requires_gpu
def test_runs_on_the_current_stream():
    """Kernels launch on the caller's current stream. The inputs are written on a side stream
    after a long sleep there; a kernel launched on any other stream would read them before
    they are written (NaN) instead of after."""
    values, extra = _inputs("stlstm_deltas", 2, 33, 35, torch.float32, "cuda")
    expected = flat_outputs(ops.stlstm_gates_ref(*values, *extra))
    xs = [torch.full_like(v, float("nan")) for v in values]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)  # ~50 ms of GPU clock cycles
        for x, v in zip(xs, values):
            x.copy_(v)
        out = flat_outputs(ops.stlstm_gates_cuda(*xs, *extra))
    torch.cuda.synchronize()
    for a, e in zip(out, expected):
        assert_close(a, e, RTOL[torch.float32])


# ============================================================================ build
CUDA_HOME = SETUP.find_cuda_home()[0]  # setup.py decides, for the build and these tests
requires_nvcc = pytest.mark.skipif(CUDA_HOME is None,
                                   reason="no CUDA toolkit (nvcc) on this machine")
CU_FILES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CUDA_DIR, "*.cu")))


def _torch_flags():
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS, include_paths

    includes = [f"-I{p}" for p in [*include_paths(), CUDA_DIR]]
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    return COMMON_NVCC_FLAGS, includes, abi


def _compile_cu(name, out_dir):
    """nvcc exactly as torch's BuildExtension runs it for setup.py's CUDAExtension."""
    common, includes, abi = _torch_flags()
    cmd = [os.path.join(CUDA_HOME, "bin", "nvcc"), "-c", os.path.join(CUDA_DIR, name),
           "-o", os.path.join(out_dir, name + ".o"), *includes, *common, abi,
           "-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C_cuda",
           "-std=c++20", "--compiler-options", "-fPIC", *SETUP.NVCC_FLAGS, *SETUP.CUDA_ARCH_FLAGS,
           "--resource-usage"]  # ptxas' per-kernel report, read by the test
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def _compile_bindings(out_dir):
    """The bindings with the host compiler, to an object file (-O0: a full compile checks
    what -fsyntax-only would not, and gives the symbols for the link check)."""
    _, includes, abi = _torch_flags()
    python_include = sysconfig.get_paths()["include"]
    flags = []
    from torch.utils.cpp_extension import include_paths
    if not any(os.path.exists(os.path.join(p, "c10", "cuda", "impl", "cuda_cmake_macros.h"))
               for p in include_paths()):
        # CPU wheels of torch ship c10/cuda but not this generated header, which on Linux
        # defines nothing the bindings use; c10 provides this switch for builds without it.
        flags.append("-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE")
    cmd = [os.environ.get("CXX", "c++"), "-c", os.path.join(CUDA_DIR, "bindings.cpp"),
           "-o", os.path.join(out_dir, "bindings.o"), *includes, f"-I{python_include}",
           f"-I{os.path.join(CUDA_HOME, 'include')}", abi, *flags, "-std=c++20", "-fPIC", "-O0",
           "-Wall", "-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C_cuda"]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """All compile jobs at once, as many in parallel as there are cores."""
    out_dir = str(tmp_path_factory.mktemp("cuda_build"))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        jobs = {name: pool.submit(_compile_cu, name, out_dir) for name in CU_FILES}
        jobs["bindings.cpp"] = pool.submit(_compile_bindings, out_dir)
        return out_dir, {name: job.result() for name, job in jobs.items()}


def _assert_compiled(result, name):
    assert result.returncode == 0, f"{name} failed to compile:\n{result.stderr[-6000:]}"
    # Warnings in our own sources fail too (torch's headers have their own).
    ours = [line for line in result.stderr.splitlines()
            if "csrc/cuda/" in line and "warning" in line.lower()]
    assert not ours, f"{name}: warnings in csrc/cuda:\n" + "\n".join(ours)


def test_cuda_sources_exist():
    assert set(CU_FILES) == {"convlstm_gates.cu", "dual_memory_gates.cu", "output_gate.cu",
                             "causal_lstm_gates.cu", "ghu_gates.cu", "mim_gates.cu"}
    assert SETUP.cuda_sources() == [os.path.join("csrc", "cuda", f) for f in CU_FILES] + [
        os.path.join("csrc", "cuda", "bindings.cpp")]


# Kernels per .cu: each op and dtype, the peephole reduction of the ConvLSTM backward too.
KERNELS = {"convlstm_gates.cu": 3 * 4, "dual_memory_gates.cu": 4 * 4, "output_gate.cu": 2 * 4,
           "mim_gates.cu": 4 * 4, "causal_lstm_gates.cu": 6 * 4, "ghu_gates.cu": 2 * 4}


@requires_nvcc
@pytest.mark.parametrize("name", CU_FILES)
def test_cu_compiles_for_sm80_and_sm90(compiled, name):
    _, results = compiled
    result = results[name]
    _assert_compiled(result, name)
    # ptxas reports every kernel it compiled, per architecture, and its spills.
    archs = {}
    for line in result.stderr.splitlines():
        if "Compiling entry function" in line:
            kernel, arch = line.split("'")[1], line.split("'")[3]
            archs.setdefault(arch, set()).add(kernel)
    assert set(archs) == {"sm_80", "sm_90"}, sorted(archs)
    assert len(archs["sm_80"]) == KERNELS[name] and archs["sm_80"] == archs["sm_90"]
    spills = [line for line in result.stderr.splitlines()
              if "spill" in line and not line.strip().startswith("0 bytes stack frame, 0 bytes "
                                                                   "spill stores, 0 bytes spill")]
    assert not spills, "register spills:\n" + "\n".join(spills)


@requires_nvcc
def test_bindings_compile_and_every_launcher_is_instantiated(compiled):
    out_dir, results = compiled
    _assert_compiled(results["bindings.cpp"], "bindings.cpp")
    for name in CU_FILES:
        _assert_compiled(results[name], name)

    def symbols(path, which):
        out = subprocess.run(["nm", which, os.path.join(out_dir, path)], capture_output=True,
                             text=True, check=True).stdout
        return {line.split()[-1] for line in out.splitlines() if "launch_" in line}

    needed = symbols("bindings.o", "--undefined-only")
    defined = set().union(*(symbols(n + ".o", "--defined-only") for n in CU_FILES))
    # 20 elementwise ops (8, MIM's 4, PredRNN++'s 8) and 1 reduction, 4 dtypes each.
    assert len(needed) == 84, sorted(needed)
    assert needed <= defined, f"launchers never instantiated: {sorted(needed - defined)}"


@pytest.mark.parametrize("env,torch_cuda,home,expected", [
    ({}, "12.8", "/usr/local/cuda", True),
    ({}, None, "/usr/local/cuda", False),            # CPU-only torch: skip quietly
    ({}, "12.8", None, False),                        # no toolkit: skip quietly
    ({}, "", None, False),                            # no torch at all
    ({"FASTCELLS_SKIP_CUDA": "1"}, "12.8", "/usr/local/cuda", False),
    ({"FASTCELLS_CUDA": "1"}, "12.8", "/usr/local/cuda", True),
    ({"FASTCELLS_CUDA": "1"}, None, "/usr/local/cuda", RuntimeError),
    ({"FASTCELLS_CUDA": "1"}, "12.8", None, RuntimeError),
    ({"FASTCELLS_CUDA": "1", "FASTCELLS_SKIP_CUDA": "1"}, "12.8", "/x", RuntimeError),
])
def test_setup_cuda_build_decision(env, torch_cuda, home, expected):
    if expected is RuntimeError:
        with pytest.raises(RuntimeError, match="FASTCELLS"):
            SETUP.cuda_build_decision(env, torch_cuda, home)
    else:
        build, why = SETUP.cuda_build_decision(env, torch_cuda, home)
        assert build is expected and why


def test_setup_flags():
    flags = " ".join(SETUP.CUDA_ARCH_FLAGS)
    assert "arch=compute_80,code=sm_80" in flags and "code=[sm_90,compute_90]" in flags
    assert "--use_fast_math" not in SETUP.NVCC_FLAGS
    assert SETUP.cuda_arch_flags({}) == SETUP.CUDA_ARCH_FLAGS
    # the GPU suite builds for the GPU it runs on: torch turns the list into -gencode flags
    assert SETUP.cuda_arch_flags({"TORCH_CUDA_ARCH_LIST": "9.0"}) == []


def _fake_toolkit(root, nvcc_body=None, headers=True):
    """A folder laid out like a CUDA toolkit; bin/nvcc answers a dry run as nvcc does."""
    (root / "bin").mkdir(parents=True)
    inc = root / "targets" / "x86_64-linux" / "include"
    inc.mkdir(parents=True)
    if headers:
        (inc / "cuda_runtime.h").write_text("")
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text(nvcc_body or f"#!/bin/sh\necho '#$ TOP={root}/bin/..' >&2\n")
    nvcc.chmod(0o755)
    return nvcc


def test_find_cuda_home_follows_a_wrapper_script(tmp_path):
    """torch guesses the folder above the nvcc on PATH; for a wrapper script in another folder
    (/usr/local/bin/nvcc running the toolkit's nvcc, as on this machine) that is /usr/local,
    which has no CUDA headers. setup.py asks nvcc itself."""
    real = _fake_toolkit(tmp_path / "cuda-13.0")
    wrapper = tmp_path / "usr" / "local" / "bin" / "nvcc"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(f'#!/bin/sh\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    home, found = SETUP.find_cuda_home({}, which=lambda name: str(wrapper))
    assert home == str((tmp_path / "cuda-13.0").resolve())
    assert f"runs {os.path.join(home, 'bin', 'nvcc')}" in found and str(wrapper) in found


def test_find_cuda_home_honours_and_checks_the_environment(tmp_path):
    kit = tmp_path / "kit"
    _fake_toolkit(kit)
    no_nvcc = lambda name: None  # noqa: E731
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home, found = SETUP.find_cuda_home({var: str(kit)}, which=no_nvcc)
        assert home == str(kit.resolve()) and found == f"{var}={kit}"
    # a setting that names no toolkit is reported, not silently replaced by another one
    home, why = SETUP.find_cuda_home({"CUDA_HOME": str(tmp_path)}, which=no_nvcc)
    assert home is None and "CUDA_HOME" in why and "not a CUDA toolkit" in why
    headerless = tmp_path / "headerless"
    nvcc = _fake_toolkit(headerless, headers=False)
    home, why = SETUP.find_cuda_home({}, which=lambda name: str(nvcc),
                                     fallback=str(tmp_path / "none"))
    assert home is None and "names no toolkit with headers" in why and "none" in why
    home, found = SETUP.find_cuda_home({}, which=no_nvcc, fallback=str(kit))
    assert home == str(kit.resolve()) and found == str(kit)


def test_setup_reports_the_toolkit_it_builds_with():
    build, why = SETUP.cuda_build_decision({}, "13.0", "/opt/cuda", "nvcc on PATH: /x/nvcc")
    assert build and "toolkit at /opt/cuda, found by nvcc on PATH: /x/nvcc" in why
    with pytest.raises(RuntimeError, match="CUDA_HOME=/nope is not a CUDA toolkit"):
        SETUP.cuda_build_decision({"FASTCELLS_CUDA": "1"}, "13.0", None,
                                  "CUDA_HOME=/nope is not a CUDA toolkit")


def test_setup_on_this_torch(monkeypatch):
    """A CPU-only torch builds the CPU extension alone; the skip flags empty the list."""
    monkeypatch.setenv("FASTCELLS_SKIP_CPP", "1")
    monkeypatch.setenv("FASTCELLS_SKIP_CUDA", "1")
    assert SETUP.extensions() == ([], {})
    if torch.version.cuda is None:
        monkeypatch.delenv("FASTCELLS_SKIP_CPP")
        monkeypatch.delenv("FASTCELLS_SKIP_CUDA")
        exts, cmdclass = SETUP.extensions()
        assert [e.name for e in exts] == ["fastcells._C"] and "build_ext" in cmdclass
        monkeypatch.setenv("FASTCELLS_CUDA", "1")
        with pytest.raises(RuntimeError, match="without CUDA"):
            SETUP.extensions()
