"""fastcells: fused kernels for convolutional recurrent cells.

Cells (one step): :class:`ConvLSTMCell`, :class:`SpatioTemporalLSTMCell` (PredRNN),
:class:`MKLSTMCell` (MS-LSTM), :class:`ConvTTLSTMCell` (Conv-TT-LSTM),
:class:`CausalLSTMCell` and :class:`GradientHighwayUnit` (PredRNN++), :class:`MIMBlock`
and :class:`MIMNCell` (MIM, OpenSTL's), :class:`MIMCell` (MIM, MS-RNN's), and
:class:`SplitConvLSTMCell` (ConvLSTM in OpenSTL's weight layout).
Sequence layers (``nn.LSTM`` style): :class:`ConvLSTM`, :class:`SpatioTemporalLSTM`,
:class:`MKLSTM`, :class:`ConvTTLSTM`, :class:`CausalLSTM` (PredRNN++), :class:`MIM`. Every
module takes ``backend=`` (see
:mod:`fastcells.backends`); the equations are in CELLS.md.
:func:`set_conv_algorithm` chooses how the C++ backend runs the convolutions (by default
autotuned per shape among oneDNN, our Winograd, NNPACK and matmul; or forced per pass,
:mod:`fastcells.ops.conv`); :func:`set_weight_grad_steps` lets it compute several steps'
weight gradients in one call (:mod:`fastcells.ops.weight_grad_steps`). :func:`patch` swaps
them into models built on the public implementations (:mod:`fastcells.patching`);
:mod:`fastcells.models` is the model zoo built on them.
"""
from .backends import available_backends
from .cells import (CausalLSTMCell, ConvLSTMCell, ConvTTLSTMCell, GradientHighwayUnit, MIMBlock,
                    MIMCell, MIMNCell, MKLSTMCell, SpatioTemporalLSTMCell, SplitConvLSTMCell)
from .layers import MIM, CausalLSTM, ConvLSTM, ConvTTLSTM, MKLSTM, SpatioTemporalLSTM
from .ops.conv import (clear_conv_algorithm_cache, conv_algorithm, conv_algorithm_cache,
                       get_conv_algorithm, set_conv_algorithm)
from .ops.weight_grad_steps import get_weight_grad_steps, set_weight_grad_steps
from .patching import patch, unpatch
from . import data, metrics, models, utils  # noqa: E402  (subpackages the README uses)

__version__ = "0.1.0"

__all__ = [
    "ConvLSTMCell", "SpatioTemporalLSTMCell", "MKLSTMCell", "ConvTTLSTMCell", "CausalLSTMCell",
    "GradientHighwayUnit",
    "MIMNCell", "MIMBlock", "MIMCell",
    "SplitConvLSTMCell",
    "ConvLSTM", "SpatioTemporalLSTM", "MKLSTM", "ConvTTLSTM", "CausalLSTM", "MIM",
    "available_backends",
    "patch", "unpatch", "models", "data", "metrics", "utils",
    "set_conv_algorithm", "get_conv_algorithm", "conv_algorithm", "conv_algorithm_cache",
    "clear_conv_algorithm_cache", "set_weight_grad_steps", "get_weight_grad_steps",
]
