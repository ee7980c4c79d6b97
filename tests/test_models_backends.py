"""Every zoo model on the fused backend equals the same model on the reference backend
(outputs, input grads, parameter grads, training losses), and checkpoints load across
backends."""
import pytest
import torch

from .conftest import requires_cpp
from .helpers import assert_close
from .models_helpers import CHANNELS, TINY, one_thread, tiny  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

OUT_RTOL, GRAD_RTOL = 1e-5, 1e-4


def _pair(key):
    ref, size = tiny(key, backend="reference")
    fused, _ = tiny(key, backend="cpp", randomized=False)
    fused.load_state_dict(ref.state_dict())
    return ref, fused, size


def _run(model, frames, full, mask, g):
    """Inference rollout and training loss, differentiated w.r.t. frames and parameters."""
    torch.manual_seed(1)  # the same dropout masks for both backends
    frames = frames.clone().requires_grad_()
    full = full.clone().requires_grad_()
    out = model(frames, pred_len=2)
    train = model.forward_train(full, mask)
    loss = (out * g).sum() + model.training_loss(full, mask)
    grads = torch.autograd.grad(loss, [frames, full, *model.parameters()])
    return out, train, grads


@requires_cpp
@pytest.mark.parametrize("key", list(TINY))
def test_fused_model_matches_reference(key):
    ref, fused, (h, w) = _pair(key)
    assert ref.backend == "reference"
    assert fused.backend == ("reference" if key == "stlight" else "cpp")
    t_in = ref.input_len if key == "stlight" else 3
    t_total = t_in + 2 if key == "stlight" else 5
    frames = torch.randn(2, t_in, CHANNELS, h, w)
    full = torch.randn(2, t_total, CHANNELS, h, w)
    mask = None if key == "stlight" else (torch.rand(2, t_total - 2) < 0.5).float()
    g = torch.randn(2, 2, CHANNELS, h, w)
    out_r, train_r, grads_r = _run(ref, frames, full, mask, g)
    out_f, train_f, grads_f = _run(fused, frames, full, mask, g)
    assert out_r.shape == (2, 2, CHANNELS, h, w)
    assert_close(out_f, out_r, OUT_RTOL, "forward")
    assert_close(train_f.predictions, train_r.predictions, OUT_RTOL, "forward_train")
    assert train_f.losses.keys() == train_r.losses.keys()
    for k in train_r.losses:
        assert_close(train_f.losses[k], train_r.losses[k], OUT_RTOL, k)
    names = ["frames", "train frames"] + [n for n, _ in ref.named_parameters()]
    for name, a, e in zip(names, grads_f, grads_r):
        assert_close(a, e, GRAD_RTOL, f"grad {name}")


@requires_cpp
@pytest.mark.parametrize("key", ["convlstm", "predrnn_v2", "ms_lstm", "conv_tt_lstm", "mim"])
def test_memory_efficient_model_matches_reference(key):
    ref, size = tiny(key, backend="reference")
    memeff, _ = tiny(key, backend="cpp", randomized=False, memory_efficient=True)
    memeff.load_state_dict(ref.state_dict())
    full = torch.randn(1, 4, CHANNELS, *size)
    gr = torch.autograd.grad(ref.training_loss(full), list(ref.parameters()))
    gm = torch.autograd.grad(memeff.training_loss(full), list(memeff.parameters()))
    for a, e in zip(gm, gr):
        assert_close(a, e, GRAD_RTOL, "grad")


@requires_cpp
@pytest.mark.parametrize("key", list(TINY))
def test_state_dict_loads_across_backends(key):
    fused, (h, w) = tiny(key, backend="cpp")
    ref, _ = tiny(key, backend="reference", randomized=False)
    assert ref.state_dict().keys() == fused.state_dict().keys()
    ref.load_state_dict(fused.state_dict())  # strict: same keys and shapes
    ref.eval()
    fused.eval()
    frames = torch.randn(1, ref.input_len if key == "stlight" else 2, CHANNELS, h, w)
    with torch.no_grad():
        assert_close(fused(frames, pred_len=2), ref(frames, pred_len=2), OUT_RTOL, "output")


@requires_cpp
def test_backend_reaches_every_cell():
    from fastcells.cells.base import CellBase
    for key in TINY:
        model, _ = tiny(key, backend="cpp", randomized=False)
        cells = [m for m in model.modules() if isinstance(m, CellBase)]
        assert all(c.requested_backend == "cpp" for c in cells), key
        assert (len(cells) > 0) == (key != "stlight"), key
