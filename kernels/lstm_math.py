"""The LSTM math of the Triton kernels, written once (CELLS.md): activations, the memory
update and its backward from saved activations. Inputs are in the accumulation dtype
(float32, or float64 for float64 tensors)."""
import triton
import triton.language as tl


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    # 1 - 2 / (e^2x + 1): saturates to +-1 without inf/inf (exp overflow gives exactly 1).
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def memory_update(zi, zf, zg, c_prev):
    """c = sigmoid(f) * c_prev + sigmoid(i) * tanh(g); returns (i, f, g, c) activations."""
    i = sigmoid(zi)
    f = sigmoid(zf)
    g = tanh(zg)
    return i, f, g, f * c_prev + i * g


@triton.jit
def memory_update_backward(dc, i, f, g, c_prev):
    """Gradients of the pre-activations zi, zf, zg and of c_prev, given dL/dc."""
    return dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f), dc * i * (1.0 - g * g), dc * f
