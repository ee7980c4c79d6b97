"""Bad input raises a clear ValueError/TypeError naming the argument, before any kernel runs;
unavailable backends raise with instructions; auto falls back (with one warning) only when
the extension is missing."""
import re
import warnings

import pytest
import torch

import fastcells as fc
from fastcells import _ext, backends

from .conftest import requires_cpp

CELLS = [
    lambda **kw: fc.ConvLSTMCell(3, 4, **kw),
    lambda **kw: fc.SpatioTemporalLSTMCell(3, 4, **kw),
    lambda **kw: fc.MKLSTMCell(3, 4, **kw),
    lambda **kw: fc.ConvTTLSTMCell(3, 4, **kw),
]
IDS = ["convlstm", "stlstm", "mklstm", "convttlstm"]


@pytest.mark.parametrize("make", CELLS, ids=IDS)
@pytest.mark.parametrize("backend", ["reference", pytest.param("cpp", marks=requires_cpp)])
def test_bad_inputs(make, backend):
    cell = make(backend=backend)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 3, H, W\)"):
        cell(torch.randn(3, 5, 5))  # rank
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 3, H, W\), got \(1, 2, 5, 5\)"):
        cell(torch.randn(1, 2, 5, 5))  # channels
    with pytest.raises(TypeError, match="x: expected a floating-point tensor"):
        cell(torch.ones(1, 3, 5, 5, dtype=torch.int64))
    with pytest.raises(TypeError, match="x: expected a Tensor"):
        cell([[1.0]])
    with pytest.raises(TypeError, match="dtype torch.float64 differs"):
        cell(torch.randn(1, 3, 5, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="device meta differs"):
        cell(torch.randn(1, 3, 5, 5, device="meta"))
    x = torch.randn(2, 3, 5, 6)
    good = cell(x)
    bad = tuple(t[:, :, :4] if isinstance(t, torch.Tensor) else t for t in good)
    with pytest.raises(ValueError, match=r"state.*expected shape \(2, 4, 5, 6\)"):
        cell(x, bad)
    with pytest.raises(ValueError, match="state: expected"):
        cell(x, good[:1])


def test_bad_history():
    cell = fc.ConvTTLSTMCell(3, 4, steps=3, backend="reference")
    x = torch.randn(1, 3, 5, 5)
    h, c, hist = cell(x)
    with pytest.raises(ValueError, match=r"history\[2\]"):
        cell(x, (h, c, hist[:2]))


def test_layer_norm_fixes_spatial_size():
    with pytest.raises(ValueError, match="spatial_size"):
        fc.SpatioTemporalLSTMCell(3, 4, layer_norm=True)
    cell = fc.SpatioTemporalLSTMCell(3, 4, layer_norm=True, spatial_size=(6, 7),
                                     backend="reference")
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 3, 6, 7\), got \(1, 3, 7, 6\)"):
        cell(torch.randn(1, 3, 7, 6))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="kernel_size: expected an odd int"):
        fc.ConvLSTMCell(3, 4, kernel_size=4)
    with pytest.raises(ValueError, match="backend must be"):
        fc.ConvLSTMCell(3, 4, backend="cuda-magic")
    with pytest.raises(ValueError, match="steps >= order"):
        fc.ConvTTLSTMCell(3, 4, order=3, steps=2)
    with pytest.raises(ValueError, match="kernel_sizes"):
        fc.MKLSTMCell(3, 4, kernel_sizes=(3,))
    with pytest.raises(ValueError, match="num_layers"):
        fc.ConvLSTM(3, 4, num_layers=0)


@pytest.mark.parametrize("build,error,message", [
    (lambda: fc.ConvLSTMCell(2.5, 4), TypeError, r"input_size: expected an int >= 1, got 2.5"),
    (lambda: fc.ConvLSTMCell("2", 4), TypeError, r"input_size: .* got '2' \(str\)"),
    (lambda: fc.ConvLSTMCell(True, 4), TypeError, r"input_size: .* got True \(bool\)"),
    (lambda: fc.ConvLSTMCell(2, 0), ValueError, r"hidden_size: expected an int >= 1, got 0"),
    (lambda: fc.ConvLSTMCell(2, 4, kernel_size=True), TypeError, r"kernel_size: .* True"),
    (lambda: fc.MKLSTMCell(2, 4, kernel_sizes=(3, 5.0)), TypeError, r"kernel_sizes\[1\]"),
    (lambda: fc.ConvTTLSTMCell(2, 4, rank=2.0), TypeError, r"rank: expected an int"),
    (lambda: fc.ConvLSTM(2, 4, num_layers=2.5), TypeError, r"num_layers: .* 2.5 \(float\)"),
    (lambda: fc.SpatioTemporalLSTM(2, 4, num_layers=True), TypeError, r"num_layers: .* True"),
])
def test_sizes_must_be_ints_of_at_least_one(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_empty_frames_are_refused_before_any_kernel():
    cell = fc.ConvLSTMCell(2, 4, backend="reference")
    for shape in [(1, 2, 0, 5), (1, 2, 5, 0), (0, 2, 5, 5)]:
        with pytest.raises(ValueError, match="every size >= 1"):
            cell(torch.randn(shape))
    layer = fc.ConvLSTM(2, 4, backend="reference")
    with pytest.raises(ValueError, match="every size >= 1"):
        layer(torch.randn(1, 3, 2, 0, 5))


def test_sequence_layer_bad_inputs():
    layer = fc.ConvLSTM(3, 4, num_layers=2, backend="reference")
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T, 3, H, W\)"):
        layer(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match="list of 2 per-layer"):
        layer(torch.randn(1, 2, 3, 5, 5), state=[None])
    with pytest.raises(ValueError, match="sequence is empty"):
        layer(torch.randn(1, 0, 3, 5, 5))


@requires_cpp
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cpp_rejects_unsupported_dtypes(dtype):
    cell = fc.ConvLSTMCell(3, 4, backend="cpp").to(dtype)
    with pytest.raises(TypeError, match="backend 'cpp' supports float32 and float64"):
        cell(torch.randn(1, 3, 5, 5, dtype=dtype))


@requires_cpp
def test_cpp_rejects_other_devices():
    with pytest.raises(ValueError, match="backend 'cpp' runs on CPU tensors"):
        backends.check_supported("cpp", torch.device("cuda"), torch.float32)


@pytest.fixture
def no_extension(monkeypatch):
    """Simulates a machine where fastcells._C was never built."""
    monkeypatch.setattr(_ext, "_loaded", True)
    monkeypatch.setattr(_ext, "_module", None)
    monkeypatch.setattr(_ext, "_error", ImportError("No module named 'fastcells._C'"))
    monkeypatch.setattr(backends, "_warned_missing_cpp", False)


def test_missing_extension_explicit_cpp_raises(no_extension):
    with pytest.raises(ImportError, match="pip install --no-build-isolation -e ."):
        fc.ConvLSTMCell(3, 4, backend="cpp")
    assert not _ext.cpp_available()
    assert "cpp" not in fc.available_backends("cpu")
    assert "reference" in fc.available_backends("cpu")


def test_missing_extension_auto_warns_once_and_uses_reference(no_extension):
    cell = fc.MKLSTMCell(3, 4)
    with pytest.warns(RuntimeWarning, match="C\\+\\+ extension is missing"):
        assert cell.backend == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h, _, _ = cell(torch.randn(1, 3, 5, 5))  # no second warning
    assert h.shape == (1, 4, 5, 5)


# ----------------------------------------------------------------------------- GPU backends
def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        backends.check_supported("triton", torch.device("cpu"), torch.float32)
    assert "triton" not in fc.available_backends("cpu")


def test_gpu_backends_reject_integer_dtypes():
    for backend in ("triton", "cuda"):
        with pytest.raises(TypeError, match="float16, bfloat16, float32 and float64"):
            backends.check_supported(backend, torch.device("cuda"), torch.int32)


def test_cuda_backend_needs_cuda_tensors(monkeypatch):
    monkeypatch.setattr(_ext, "cuda_available", lambda: True)
    with pytest.raises(ValueError, match="runs on CUDA tensors"):
        backends.check_supported("cuda", torch.device("cpu"), torch.float32)


def test_missing_cuda_extension_explicit_backend_raises():
    if _ext.cuda_available():
        pytest.skip("the CUDA extension is built here")
    with pytest.raises(ImportError, match="fastcells._C_cuda"):
        fc.ConvLSTMCell(3, 4, backend="cuda")


def test_missing_triton_explicit_backend_raises(monkeypatch):
    monkeypatch.setattr(_ext, "_module_version", lambda name: None)  # nothing importable
    assert not _ext.triton_available()
    with pytest.raises(ImportError, match=r"pip install 'triton>=3.6,<3.10'"):
        fc.ConvLSTMCell(3, 4, backend="triton")


def _fake_triton(monkeypatch, version, numpy_version, interpreted):
    versions = {"triton": version, "numpy": numpy_version}
    monkeypatch.setattr(_ext, "_module_version", versions.get)
    monkeypatch.setenv("TRITON_INTERPRET", "1" if interpreted else "0")


@pytest.mark.parametrize("version,numpy_version,interpreted,problem", [
    ("3.9.0", "2.4.6", True, None),
    ("3.6.0", "2.3.5", True, None),
    ("3.6.0", "2.4.0", False, None),        # compiled GPU code does not use numpy
    ("3.6.0", "2.4.0", True, "numpy<2.4"),  # the 3.6 interpreter breaks on numpy 2.4
    ("3.7.1", "2.4.6", True, None),
    ("3.5.1", "2.3.5", False, "older than"),
    ("3.10.0+git1234", "2.4.6", True, None),
])
def test_triton_versions(monkeypatch, version, numpy_version, interpreted, problem):
    _fake_triton(monkeypatch, version, numpy_version, interpreted)
    reason = _ext.triton_unavailable_reason()
    if problem is None:
        assert reason is None and _ext.triton_available()
    else:
        assert problem in reason and not _ext.triton_available()
        with pytest.raises(ImportError, match=re.escape(problem)):
            fc.ConvLSTMCell(3, 4, backend="triton")


@pytest.mark.parametrize("cuda_built", [True, False])
def test_auto_on_cuda_follows_the_per_cell_preference(monkeypatch, cuda_built):
    """The rule of backends.AUTO_PREFERENCE, with availability simulated (no GPU here)."""
    monkeypatch.setattr(_ext, "cuda_available", lambda: cuda_built)
    monkeypatch.setattr(_ext, "triton_available", lambda: True)
    cuda = torch.device("cuda")
    for cell, preference in backends.AUTO_PREFERENCE.items():
        expected = next(b for b in preference if cuda_built or b != "cuda")
        assert backends.resolve("auto", cuda, torch.bfloat16, cell) == expected
    monkeypatch.setattr(_ext, "triton_available", lambda: False)
    expected = "cuda" if cuda_built else "reference"
    assert backends.resolve("auto", cuda, torch.float32, "convlstm") == expected


def test_auto_on_cpu_never_picks_the_triton_interpreter():
    for cls in (fc.ConvLSTMCell, fc.ConvTTLSTMCell):
        assert cls(3, 4).backend in ("cpp", "reference")
