"""Each fused gate op against its eager reference, forward and backward."""
import pytest
import torch

from fastcells import ops

from .conftest import requires_cpp
from .helpers import RTOL, assert_close

pytestmark = requires_cpp

C = 5


def _planes(b, k, h, w, dtype, layout):
    """A (b, k, h, w) tensor in one of the layouts users hand us."""
    if layout == "contiguous":
        return torch.randn(b, k, h, w, dtype=dtype)
    if layout == "channels_last":
        return torch.randn(b, k, h, w, dtype=dtype).to(memory_format=torch.channels_last)
    if layout == "channel_slice":  # batch stride larger than k*h*w: read in place
        return torch.randn(b, k + 3, h, w, dtype=dtype)[:, 2:2 + k]
    if layout == "strided":  # every other channel: needs a copy
        return torch.randn(b, 2 * k, h, w, dtype=dtype)[:, ::2]
    if layout == "transposed":
        return torch.randn(b, k, w, h, dtype=dtype).transpose(2, 3)
    raise ValueError(layout)


OPS = {
    # name: (ref, cpp, channel multiples of the tensor inputs, extra args)
    "convlstm": (ops.convlstm_gates_ref, ops.convlstm_gates_cpp, (4, 1), (None, 0.0)),
    "convlstm_fb": (ops.convlstm_gates_ref, ops.convlstm_gates_cpp, (4, 1), (None, 1.5)),
    "convlstm_peephole": (ops.convlstm_gates_ref, ops.convlstm_gates_cpp, (4, 1), ("peep", 0.7)),
    "stlstm": (ops.stlstm_gates_ref, ops.stlstm_gates_cpp, (7, 4, 3, 1, 1), (False,)),
    "stlstm_deltas": (ops.stlstm_gates_ref, ops.stlstm_gates_cpp, (7, 4, 3, 1, 1), (True,)),
    "mklstm": (ops.mklstm_gates_ref, ops.mklstm_gates_cpp, (4, 4, 1, 1), ()),
    "output": (ops.output_gate_ref, ops.output_gate_cpp, (1, 1, 1), ()),
}


def _inputs(name, b, h, w, dtype, layout, requires_grad=True):
    _, _, mults, extra = OPS[name]
    xs = [_planes(b, m * C, h, w, dtype, layout).requires_grad_(requires_grad) for m in mults]
    extra = tuple(torch.randn(3, C, dtype=dtype, requires_grad=requires_grad) if e == "peep" else e
                  for e in extra)
    return xs, extra


def _flat(out):
    """Differentiable tensors of an op's output, in order (deltas tuples flattened)."""
    if isinstance(out, torch.Tensor):
        return [out]
    flat = []
    for o in out:
        flat.extend(_flat(o) if isinstance(o, (tuple, list)) else ([o] if o is not None else []))
    return flat


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "channel_slice", "strided",
                                    "transposed"])
@pytest.mark.parametrize("shape", [(2, 9, 11), (1, 7, 5), (3, 1, 13)])
def test_matches_reference(name, layout, shape):
    ref, cpp, _, _ = OPS[name]
    b, h, w = shape
    dtype = torch.float32
    xs, extra = _inputs(name, b, h, w, dtype, layout)
    out_ref, out_cpp = _flat(ref(*xs, *extra)), _flat(cpp(*xs, *extra))
    assert len(out_ref) == len(out_cpp)
    for i, (a, e) in enumerate(zip(out_cpp, out_ref)):
        assert_close(a, e, RTOL[dtype], f"{name} output {i}")
    grads = [torch.randn_like(o) for o in out_ref]
    leaves = [*xs, *[e for e in extra if isinstance(e, torch.Tensor)]]
    g_ref = torch.autograd.grad(out_ref, leaves, grads)
    g_cpp = torch.autograd.grad(out_cpp, leaves, grads)
    for i, (a, e) in enumerate(zip(g_cpp, g_ref)):
        assert_close(a, e, RTOL[dtype], f"{name} grad {i}")


@pytest.mark.parametrize("name", list(OPS))
def test_unused_outputs_get_no_gradient(name):
    """Only the first output reaches the loss: the others' gradients are treated as zero."""
    ref, cpp, _, _ = OPS[name]
    xs, extra = _inputs(name, 2, 5, 6, torch.float64, "contiguous")
    g_ref = torch.autograd.grad(_flat(ref(*xs, *extra))[0].sum(), xs, allow_unused=True)
    g_cpp = torch.autograd.grad(_flat(cpp(*xs, *extra))[0].sum(), xs, allow_unused=True)
    for a, e in zip(g_cpp, g_ref):
        if e is None:
            assert a is None or a.abs().max() == 0
        else:
            assert_close(a, e, RTOL[torch.float64])


@pytest.mark.parametrize("name", list(OPS))
def test_gradcheck_float64(name):
    _, cpp, _, _ = OPS[name]
    xs, extra = _inputs(name, 2, 3, 4, torch.float64, "contiguous")
    tensors = [*xs, *[e for e in extra if isinstance(e, torch.Tensor)]]
    n = len(xs)

    def fn(*ts):
        it = iter(ts[n:])
        args = [next(it) if isinstance(e, torch.Tensor) else e for e in extra]
        return tuple(_flat(cpp(*ts[:n], *args)))

    assert torch.autograd.gradcheck(fn, tensors)


@pytest.mark.parametrize("name", list(OPS))
def test_float64_matches_reference_exactly(name):
    ref, cpp, _, _ = OPS[name]
    xs, extra = _inputs(name, 2, 5, 3, torch.float64, "contiguous")
    for a, e in zip(_flat(cpp(*xs, *extra)), _flat(ref(*xs, *extra))):
        assert_close(a, e, RTOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_unsupported_dtype_is_an_error(dtype):
    xs, extra = _inputs("convlstm", 1, 3, 3, torch.float32, "contiguous", requires_grad=False)
    with pytest.raises(RuntimeError):
        ops.convlstm_gates_cpp(*[x.to(dtype) for x in xs], *extra)


def _op_samples():
    z = torch.randn(2, 4 * C, 3, 5)
    c = torch.randn(2, C, 3, 5)
    peep = torch.randn(3, C)
    g = torch.randn(2, C, 3, 5)
    acts4 = torch.rand(2, 4 * C, 3, 5)
    zx, zh, zm = (torch.randn(2, k * C, 3, 5) for k in (7, 4, 3))
    acts6, acts2 = torch.rand(2, 6 * C, 3, 5), torch.rand(2, 2 * C, 3, 5)
    f = torch.ops.fastcells
    return [
        (f.convlstm_gates.default, (z.requires_grad_(), c.clone().requires_grad_(), None, 0.5)),
        (f.convlstm_gates.default, (z, c.clone().requires_grad_(), peep.requires_grad_(), 0.0)),
        (f.convlstm_gates_backward.default, (g, g, acts4, c, c, peep.detach())),
        (f.stlstm_gates.default, (zx.requires_grad_(), zh, zm, c, c, True)),
        (f.stlstm_gates_backward.default, (acts2, g, acts2, acts6, c, c)),
        (f.mklstm_gates.default, (z, z.detach().clone().requires_grad_(), c, c)),
        (f.mklstm_gates_backward.default, (acts2, g, acts6, c, c)),
        (f.output_gate.default, (g.clone().requires_grad_(), g, g)),
        (f.output_gate_backward.default, (g, acts2)),
    ]


@pytest.mark.parametrize("i", range(9))
def test_opcheck(i):
    op, args = _op_samples()[i]
    torch.library.opcheck(op, args)
