"""The zoo's interface: registry, shapes for presets and odd sizes, the shared rollout's
semantics, architecture details, and errors on bad input."""
import pytest
import torch
import torch.nn.functional as F

import fastcells.models as M
from fastcells.models.sampling import full_mask

from .helpers import randomize
from .models_helpers import CHANNELS, TINY, one_thread, tiny  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

ALL = ["convlstm", "predrnn", "predrnn_v2", "predrnn_pp", "sms_lstm", "tms_lstm", "ms_lstm",
       "conv_tt_lstm", "conv_tt_lstm_baseline", "e_convlstm", "mim", "stlight", "rmt", "vdt"]


def test_list_models_and_presets():
    assert M.list_models() == ALL
    for name in ALL:
        assert M.describe(name)
        assert "mmnist" in M.list_presets(name)
    for name in ["convlstm", "predrnn", "predrnn_v2", "predrnn_pp", "sms_lstm", "tms_lstm",
                 "ms_lstm", "e_convlstm"]:
        assert M.preset_config(name, "taxibj")["frame_size"] == (32, 32)
    assert M.preset_config("ms_lstm", "mmnist")["kernel_sizes"] == (3, 5)
    assert M.preset_config("conv_tt_lstm", "mmnist")["rank"] == 8


# Preset frame shapes, mostly at narrower widths (the shapes do not depend on the widths),
# batch 1, short sequences.
PRESET_SHAPES = [
    ("convlstm", "taxibj", {}), ("predrnn", "taxibj", {"hidden_size": 4}),
    ("ms_lstm", "taxibj", {"hidden_size": 4}),
    ("sms_lstm", "mmnist", {"hidden_size": 4}), ("tms_lstm", "mmnist", {"hidden_size": 4}),
    ("predrnn_v2", "mmnist", {"hidden_size": 4, "num_layers": 2}),
    ("predrnn_pp", "openstl_mmnist", {"hidden_size": 4, "num_layers": 2}),
    ("conv_tt_lstm", "mmnist", {"hidden_channels": (4, 4, 4, 4), "rank": 2}),
    ("conv_tt_lstm_baseline", "kth", {"hidden_channels": (2, 3, 3, 2)}),
    ("e_convlstm", "taxibj", {"hidden_size": 4, "num_layers": 2}),
    ("stlight", "mmnist", {"dim": 16, "depth": 3}),
    ("mim", "taxibj", {"hidden_size": 4, "num_layers": 2}),
]


@pytest.mark.parametrize("name,preset,overrides", PRESET_SHAPES)
def test_preset_output_shapes(name, preset, overrides):
    model = M.create(name, preset=preset, backend="reference", **overrides).eval()
    c, (h, w) = model.frame_channels, model.frame_size
    t_in = model.input_len if name == "stlight" else 2
    with torch.no_grad():
        out = model(torch.rand(1, t_in, c, h, w), pred_len=3)
        assert out.shape == (1, 3, c, h, w)
        assert model(torch.rand(1, t_in, c, h, w)).shape == (1, model.pred_len, c, h, w)
    if preset == "kth":
        assert ((out > 0) & (out < 1)).all()  # the KTH setting ends in a sigmoid


@pytest.mark.parametrize("key", list(TINY))
def test_shapes_odd_sizes_and_training_output(key):
    model, (h, w) = tiny(key)
    t_in = model.input_len if key == "stlight" else 3
    out = model(torch.randn(2, t_in, CHANNELS, h, w), pred_len=4)
    assert out.shape == (2, 4, CHANNELS, h, w)
    t = t_in + model.pred_len if key == "stlight" else 5
    frames = torch.randn(2, t, CHANNELS, h, w)
    train = model.forward_train(frames)
    expected = model.pred_len if key == "stlight" else t - 1
    assert train.predictions.shape == train.targets.shape == (2, expected, CHANNELS, h, w)
    loss = model.training_loss(frames)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert set(train.losses) == {"predrnn_v2": {"decouple"},
                                 "e_convlstm": {"temporal_consistency"}}.get(key, set())


@pytest.mark.parametrize("key", [k for k in TINY if k != "stlight"])
def test_rollout_steps_and_masks(key):
    """T_in + N - 1 steps; predictions after T_in - 1 steps are the forecast; a mask of ones
    is teacher forcing; a mask of zeros after the inputs is the autoregressive rollout."""
    model, (h, w) = tiny(key)
    model.eval()  # no dropout, so runs are comparable
    t_in, n = 3, 3
    frames = torch.randn(2, t_in + n, CHANNELS, h, w)
    calls = []
    step = model.step
    model.step = lambda x, s, aux: calls.append(x) or step(x, s, aux)
    with torch.no_grad():
        forecast = model(frames[:, :t_in], pred_len=n)
        assert len(calls) == t_in + n - 1
        for t in range(t_in):
            assert torch.equal(calls[t], frames[:, t])
        steps = t_in + n - 2
        teacher = model.forward_train(frames)
        ones = model.forward_train(frames, torch.ones(2, steps))
        auto = model.forward_train(frames, full_mask(torch.zeros(2, n - 1), t_in))
        per_pixel = model.forward_train(frames, torch.ones(2, steps, CHANNELS, h, w))
    torch.testing.assert_close(ones.predictions, teacher.predictions, rtol=0, atol=0)
    torch.testing.assert_close(per_pixel.predictions, teacher.predictions, rtol=0, atol=0)
    torch.testing.assert_close(auto.predictions[:, t_in - 1:], forecast, rtol=1e-6, atol=1e-6)
    assert torch.equal(teacher.targets, frames[:, 1:])
    # mixing: step t reads mask * frame_t + (1 - mask) * prediction_of_frame_t
    calls.clear()
    mask = torch.rand(2, steps)
    with torch.no_grad():
        mixed = model.forward_train(frames, mask)
    for t in range(1, t_in + n - 1):
        m = mask[:, t - 1, None, None, None]
        want = m * frames[:, t] + (1 - m) * mixed.predictions[:, t - 1]
        torch.testing.assert_close(calls[t], want)


def test_pyramid_resolutions_and_skips():
    model = M.create("sms_lstm", frame_channels=1, hidden_size=3, num_layers=6,
                     backend="reference")
    sizes = []
    for cell in model.cells:
        cell.register_forward_hook(lambda m, i, o: sizes.append(tuple(i[0].shape[-2:])))
    model(torch.rand(1, 1, 1, 13, 11), pred_len=1)
    assert sizes == [(13, 11), (6, 5), (3, 2), (3, 2), (6, 5), (13, 11)]
    # layer 3's input is layer 2's output; layer 4's the upsampled layer-3 output plus layer 1's
    outs = []
    for cell in model.cells:
        cell.register_forward_hook(lambda m, i, o: outs.append((i[0], o[0])))
    model(torch.rand(1, 1, 1, 16, 16), pred_len=1)
    up = F.interpolate(outs[3][1], scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(outs[4][0], up + outs[1][1])
    torch.testing.assert_close(outs[2][0], F.max_pool2d(outs[1][1], 2))


def test_conv_tt_skip_channels_follow_nvlabs():
    model = M.create("conv_tt_lstm_baseline", preset="mmnist", backend="reference")
    first = [block[0].input_size for block in model.blocks]
    assert first == [1, 32, 48, 48 + 32]
    assert model.output.in_channels == 32 + 48
    assert sum(len(b) for b in model.blocks) == 12


def test_predrnn_patch_reshape_is_thuml_order():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    p = M.reshape_patch(x, 2)
    # thuml: (B, H, W, C) -> (B, H/p, p, W/p, p, C) -> (B, H/p, W/p, p, p, C) -> p*p*C
    nhwc = x.permute(0, 2, 3, 1).reshape(2, 2, 2, 3, 2, 3).permute(0, 1, 3, 2, 4, 5)
    thuml = nhwc.reshape(2, 2, 3, 12).permute(0, 3, 1, 2)
    assert torch.equal(p, thuml)
    assert torch.equal(M.reshape_patch_back(p, 2), x)


def test_predrnn_zigzag_memory():
    """The bottom layer reads the top layer's m from the previous step."""
    model, (h, w) = tiny("predrnn")
    seen = []
    for cell in model.cells:
        cell.register_forward_hook(lambda m, i, o: seen.append((i[1][2], o[2])))
    model(torch.randn(1, 2, CHANNELS, h, w), pred_len=1)
    (m_in0, m_out0), (m_in1, m_out1), (m_in2, _), _ = seen
    assert not m_in0.any()
    assert m_in1 is m_out0 and m_in2 is m_out1


def test_predrnn_v2_predicts_like_predrnn():
    """The decoupling loss only adds a training term (and the adapter); the network is
    PredRNN's."""
    v2, (h, w) = tiny("predrnn_v2")
    v1 = M.create("predrnn", frame_channels=CHANNELS, backend="reference", **TINY["predrnn_v2"][1])
    v1.load_state_dict({k: v for k, v in v2.state_dict().items() if not k.startswith("adapter")})
    frames = torch.randn(1, 4, CHANNELS, h, w)
    with torch.no_grad():
        torch.testing.assert_close(v2(frames, pred_len=2), v1(frames, pred_len=2))
        torch.testing.assert_close(v2.forward_train(frames).predictions,
                                   v1.forward_train(frames).predictions)


def test_e_convlstm_dropout_only_in_training():
    model, (h, w) = tiny("e_convlstm")
    frames = torch.randn(1, 3, CHANNELS, h, w)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(frames, pred_len=2), model(frames, pred_len=2))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(frames, pred_len=2), model(frames, pred_len=2))


def test_temporal_consistency_loss_definition():
    p, t = torch.randn(2, 4, 1, 3, 3), torch.randn(2, 4, 1, 3, 3)
    want = ((p[:, 1:] - p[:, :-1]) - (t[:, 1:] - t[:, :-1])).pow(2).mean()
    torch.testing.assert_close(M.temporal_consistency_loss(p, t), want)
    model, (h, w) = tiny("e_convlstm")
    model.eval()
    frames = torch.randn(1, 4, CHANNELS, h, w)
    out = model.forward_train(frames)
    want = F.mse_loss(out.predictions, out.targets) + 0.1 * M.temporal_consistency_loss(
        out.predictions, out.targets)
    torch.testing.assert_close(model.training_loss(frames), want)


def test_stlight_rollout_beyond_one_pass():
    model, (h, w) = tiny("stlight")
    model.eval()
    frames = torch.randn(1, 3, CHANNELS, h, w)
    with torch.no_grad():
        out = model(frames, pred_len=5)  # pred_len 2 per pass: three passes
        first = model.predict_once(frames)
        second = model.predict_once(torch.cat([frames, first], 1)[:, -3:])
    assert out.shape == (1, 5, CHANNELS, h, w)
    torch.testing.assert_close(out[:, :2], first)
    torch.testing.assert_close(out[:, 2:4], second)


def test_stlight_uses_listing_structure():
    model = M.create("stlight", preset="mmnist", dim=8, depth=6)
    assert model.encoder[0].kernel_size == (2, 2) and model.encoder[0].stride == (2, 2)
    assert model.reassemble.in_channels == 8 // 4 and model.reassemble.out_channels == 10
    dw = model.mixers[0][0].fn
    assert dw[0].groups == 8 and dw[1].dilation == (3, 3) and dw[1].kernel_size == (7, 7)


# --- errors ---------------------------------------------------------------------------


def _preset_model():
    model = M.create("convlstm", preset="taxibj", hidden_size=2, backend="reference")
    randomize(model)
    return model


@pytest.mark.parametrize("shape,match", [
    ((1, 4, 1, 32, 32), r"frames: expected shape \(B, T, 2, 32, 32\)"),
    ((1, 4, 2, 64, 64), r"frames: expected shape \(B, T, 2, 32, 32\)"),
    ((1, 0, 2, 32, 32), r"T_in = frames.shape\[1\] must be >= 1"),
    ((4, 2, 32, 32), r"frames: expected shape \(B, T, 2, 32, 32\)"),
])
def test_bad_frames_raise(shape, match):
    with pytest.raises(ValueError, match=match):
        _preset_model()(torch.zeros(shape))


@pytest.mark.parametrize("pred_len", [0, -1, 1.5, True])
def test_bad_pred_len_raises(pred_len):
    with pytest.raises(ValueError, match="pred_len must be an int >= 1"):
        _preset_model()(torch.zeros(1, 4, 2, 32, 32), pred_len=pred_len)


def test_bad_training_input_raises():
    model = _preset_model()
    with pytest.raises(ValueError, match=r"T = frames.shape\[1\] must be >= 2"):
        model.forward_train(torch.zeros(1, 1, 2, 32, 32))
    with pytest.raises(ValueError, match=r"mask: expected shape \(1, 6\)"):
        model.forward_train(torch.zeros(1, 8, 2, 32, 32), torch.ones(1, 7))
    with pytest.raises(ValueError, match=r"mask: expected shape"):
        model.forward_train(torch.zeros(1, 8, 2, 32, 32), torch.ones(1, 6, 3, 32, 32))
    with pytest.raises(TypeError, match="mask: expected a Tensor"):
        model.forward_train(torch.zeros(1, 8, 2, 32, 32), [1] * 6)
    with pytest.raises(TypeError, match="frames: expected a floating-point tensor"):
        model(torch.zeros(1, 4, 2, 32, 32, dtype=torch.long))
    with pytest.raises(TypeError, match="frames: expected a Tensor"):
        model([[0.0]])


def test_architecture_limits_raise():
    pyramid = M.create("ms_lstm", frame_channels=1, hidden_size=2, backend="reference")
    with pytest.raises(ValueError, match="H and W must be >= 4"):
        pyramid(torch.zeros(1, 2, 1, 3, 8))
    with pytest.raises(ValueError, match="num_layers must be even"):
        M.create("ms_lstm", frame_channels=1, num_layers=5)
    with pytest.raises(ValueError, match="divisible by patch_size=2"):
        M.create("predrnn", frame_channels=1, patch_size=2, frame_size=(9, 8))
    patched = M.create("predrnn", frame_channels=1, hidden_size=2, patch_size=2)
    with pytest.raises(ValueError, match="divisible by patch_size=2"):
        patched(torch.zeros(1, 2, 1, 9, 8))
    stlight = M.create("stlight", preset="mmnist", dim=8, depth=1)
    with pytest.raises(ValueError, match="T must be = input_len = 10"):
        stlight(torch.zeros(1, 9, 1, 64, 64))
    with pytest.raises(ValueError, match="T must be >= input_len \\+ pred_len = 20"):
        stlight.forward_train(torch.zeros(1, 12, 1, 64, 64))
    with pytest.raises(ValueError, match="mask must be None"):
        stlight.forward_train(torch.zeros(1, 20, 1, 64, 64), torch.ones(1, 18))


@pytest.mark.parametrize("name,override,takes", [
    ("ms_lstm", {"kernel_size": 7}, "kernel_sizes"),          # MK-LSTM reads kernel_sizes
    ("tms_lstm", {"kernel_size": 7}, "kernel_sizes"),
    ("convlstm", {"kernel_sizes": (7, 9)}, "kernel_size"),    # ConvLSTM reads kernel_size
    ("sms_lstm", {"kernel_sizes": (7, 9)}, "kernel_size"),
    ("conv_tt_lstm_baseline", {"rank": 4}, "kernel_size"),    # no CTT chain in the baseline
])
def test_overrides_the_model_would_ignore_are_refused(name, override, takes):
    """Before, these built the preset's model unchanged while config.json recorded them."""
    with pytest.raises(TypeError, match=f"{next(iter(override))}: model '{name}' does not "
                                        f"take this argument; it takes .*{takes}"):
        M.create(name, preset=list(M.list_presets(name))[0], **override)


def test_overrides_that_apply_do_apply():
    model = M.create("ms_lstm", preset="mmnist", kernel_sizes=(3, 7), hidden_size=4,
                     num_layers=2, backend="reference")
    assert model.cells[0].kernel_sizes == (3, 7)
    model = M.create("convlstm", preset="mmnist", kernel_size=5, hidden_size=4, num_layers=1,
                     backend="reference")
    assert model.cells[0].kernel_size == 5


@pytest.mark.parametrize("override,error,message", [
    ({"hidden_size": "8"}, TypeError, r"hidden_size: expected an int >= 1, got '8' \(str\)"),
    ({"hidden_size": -3}, ValueError, r"hidden_size: expected an int >= 1, got -3"),
    ({"hidden_size": 0}, ValueError, r"hidden_size: expected an int >= 1, got 0"),
    ({"frame_size": "32,32"}, TypeError, r"frame_size: expected a tuple of ints"),
    ({"frame_size": (32, 0)}, ValueError, r"frame_size\[1\]: expected an int >= 1"),
])
def test_size_overrides_are_checked_by_name(override, error, message):
    with pytest.raises(error, match=message):
        M.create("convlstm", preset="mmnist", **override)


def test_registry_errors():
    with pytest.raises(ValueError, match="name: unknown model 'mslstm'"):
        M.create("mslstm")
    with pytest.raises(ValueError, match=r"preset: model 'stlight' has presets \['mmnist'\]"):
        M.create("stlight", preset="taxibj")
    with pytest.raises(TypeError, match="frame_channels: model 'convlstm' needs"):
        M.create("convlstm")
    with pytest.raises(TypeError, match="cell"):
        M.create("ms_lstm", preset="mmnist", cell="convlstm")
    with pytest.raises(TypeError, match="hiden_size: model 'convlstm' does not take this "
                                        "argument; it takes .*hidden_size"):
        M.create("convlstm", preset="mmnist", hiden_size=3)
    with pytest.raises(ValueError, match="backend must be"):
        M.create("convlstm", preset="mmnist", backend="cudnn")
    with pytest.raises(ValueError, match="input_shape: expected"):
        M.profile(M.create("convlstm", preset="mmnist"), (1, 10, 64, 64))
