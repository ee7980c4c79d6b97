"""fastcells.patch on MS-RNN's PredRNN++ (tests/public/msrnn_predrnnpp.py re-creation):
``PredRNN_Plus2_Cell`` (causal LSTM over concatenations, the GHU inside layer 1's cell) in
its layer stack: outputs and every gradient over several steps, all backends, state_dict
and checkpoints unchanged, look-alikes skipped with a reason."""
import copy
import io
import warnings

import pytest
import torch
from torch import nn

import fastcells as fc
from fastcells.patching import PatchWarning, convert
from fastcells.patching.msrnn_predrnnpp import MSRNNPredRNNPlus2Cell

from .conftest import requires_cpp
from .helpers import assert_close, assert_lookalikes_reported, randomize
from .public import msrnn_predrnnpp as public

LAYERS = ["lstm.0", "lstm.1", "lstm.2"]


def _model(dtype=torch.float32, b=2, size=(11, 9), channels=5, kernel=3):
    model = public.PredRNN_Plus2(3, channels, (b, *size), 3, kernel).to(dtype)
    randomize(model)
    return model


def _run(model, x, weights):
    x = x.detach().clone().requires_grad_()
    out = model(x)
    params = list(model.parameters())
    grads = torch.autograd.grad((out * weights).sum(), [x, *params], allow_unused=True)
    return out, grads


def _compare(original, patched, x, out_tol=1e-5, grad_tol=1e-4):
    weights = torch.randn(x.shape, dtype=x.dtype)
    out_o, grads_o = _run(original, x, weights)
    out_p, grads_p = _run(patched, x, weights)
    assert_close(out_p, out_o, out_tol, "output")
    names = ["input", *(n for n, _ in original.named_parameters())]
    for name, a, e in zip(names, grads_p, grads_o):
        assert (a is None) == (e is None), name  # lstm.0/2's _conv_x/_conv_z: no GHU there
        if e is not None:
            assert_close(a, e, grad_tol, f"grad {name}")


@pytest.mark.parametrize("backend,memory_efficient,b,size,kernel", [
    ("reference", False, 2, (11, 9), 3),
    pytest.param("cpp", False, 2, (11, 9), 3, marks=requires_cpp),
    pytest.param("cpp", True, 1, (7, 5), 5, marks=requires_cpp),
    ("triton", False, 1, (5, 3), 3),  # the interpreter: tiny
])
def test_patched_model_matches_original(backend, memory_efficient, b, size, kernel):
    original = _model(b=b, size=size, kernel=kernel)
    patched = copy.deepcopy(original)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PatchWarning)
        assert fc.patch(patched, backend, memory_efficient=memory_efficient) == LAYERS
    for name in LAYERS:
        cell = patched.get_submodule(name)
        assert isinstance(cell, MSRNNPredRNNPlus2Cell) and cell.backend == backend
    steps = 2 if backend == "triton" else 4
    _compare(original, patched, torch.randn(b, steps, 3, *size))


def test_float64_patched_model_is_exact():
    original = _model(torch.float64)
    patched = copy.deepcopy(original)
    fc.patch(patched)
    _compare(original, patched, torch.randn(2, 3, 3, 11, 9, dtype=torch.float64), 1e-11, 1e-11)


def test_state_dict_checkpoints_and_unpatch():
    original = _model()
    keys = [(k, v.shape) for k, v in original.state_dict().items()]
    saved = io.BytesIO()
    torch.save(original.state_dict(), saved)
    fresh = public.PredRNN_Plus2(3, 5, (2, 11, 9), 3, 3)
    params = [id(p) for p in fresh.parameters()]
    fc.patch(fresh)
    assert [(k, v.shape) for k, v in fresh.state_dict().items()] == keys  # keys, order, shapes
    assert [id(p) for p in fresh.parameters()] == params
    saved.seek(0)
    fresh.load_state_dict(torch.load(saved))  # saved before patching, loaded after
    x = torch.randn(2, 3, 3, 11, 9)
    with torch.no_grad():
        assert_close(fresh(x), original(x), 1e-5)
        assert fc.unpatch(fresh) == LAYERS
        assert type(fresh.lstm[1]) is public.PredRNN_Plus2_Cell
        assert_close(fresh(x), original(x), 0)


@requires_cpp
def test_drop_in_api_is_kept():
    cell = public.PredRNN_Plus2_Cell(4, 4, (2, 5, 7), 3, 1, 1)
    randomize(cell)
    drop = convert(copy.deepcopy(cell), "cpp")
    assert (drop._state_height, drop._state_width, drop._input_channel) == (5, 7, 4)
    x = torch.randn(2, 4, 5, 7).to(memory_format=torch.channels_last)
    m = torch.randn(2, 4, 7, 5).transpose(2, 3)  # non-contiguous
    for layer in (0, 1, 2):
        for hiddens in (None, [torch.randn(2, 4, 5, 7) for _ in range(3)]):
            got, want = drop(x, m, hiddens, layer), cell(x, m, hiddens, layer)
            assert isinstance(got[2], list) and got[2][0] is got[0]
            assert (got[2][2] is None) == (layer != 1)
            for a, e in zip([*got[:2], *got[2]], [*want[:2], *want[2]]):
                if e is not None:
                    assert_close(a, e, 1e-5)
    h, c, _ = got[2]
    drop(x, None, [h, c, None], 0)  # later steps of a layer without GHU: z is None
    with pytest.raises(ValueError, match="x"):
        drop(torch.randn(2, 3, 5, 7), m, None, 0)
    with pytest.raises((ValueError, TypeError), match="z"):
        drop(x, m, [h, c, None], 1)


def _lookalikes():
    """(module, text the skip reason must contain)."""
    cell = public.PredRNN_Plus2_Cell
    items = [(cell(3, 4, (1, 5, 5), 3, 1, 1), "input_channel 3 != "),
             (cell(4, 4, (1, 5, 5), 3, 2, 1), "stride")]
    wide_m = cell(4, 4, (1, 5, 5), 3, 1, 1)
    wide_m._conv_m = nn.Conv2d(4, 4, 3, padding=1)
    items.append((wide_m, "_conv_m has kernel 3, expected 1"))
    mixed = cell(4, 4, (1, 5, 5), 3, 1, 1)
    mixed._conv_z = nn.Conv2d(4, 8, 3, padding=1, bias=False)
    items.append((mixed, "mixed biases"))

    class PredRNN_Plus2_Cell(cell):  # OpenSTL's m update: no m term in g'
        def forward(self, x, m, hiddens, l):  # noqa: E741
            h, c, z = hiddens
            i, f, g = torch.chunk(self._conv_x_h_c(torch.cat([x, h, c], 1)), 3, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            i, f, g = torch.chunk(self._conv_x_c_m(torch.cat([x, c, m], 1)), 3, dim=1)
            g = torch.chunk(self._conv_x_c_m(torch.cat([x, c, 0 * m], 1)), 3, dim=1)[2]
            m = torch.sigmoid(f) * torch.tanh(self._conv_m(m)) + torch.sigmoid(i) * torch.tanh(g)
            o = torch.tanh(self._conv_o(torch.cat([x, c, m], 1)))
            h = o * torch.tanh(self._conv_c_m(torch.cat([c, m], 1)))
            return h, m, [h, c, z if l == 1 else None]

    items.append((PredRNN_Plus2_Cell(4, 4, (1, 5, 5), 3, 1, 1), "computes something else"))

    class PredRNN_Plus2_Cell(cell):  # the GHU in layer 0 instead
        def forward(self, x, m, hiddens, l):  # noqa: E741
            return super().forward(x, m, hiddens, 1 if l == 0 else (0 if l == 1 else l))

    items.append((PredRNN_Plus2_Cell(4, 4, (1, 5, 5), 3, 1, 1), "computes something else"))
    return items


def test_lookalikes_are_left_alone_and_reported():
    items = _lookalikes()
    assert_lookalikes_reported(items)
