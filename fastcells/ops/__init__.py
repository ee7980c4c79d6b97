"""Gate math of the four cells, one module per fused op, each beside its ``*_ref``.

Every op has the same signature in each backend; :data:`GATES` maps a backend name to the
implementations the cells call. :func:`conv_gates_triton` (convolution and gates in one
kernel, the ``fused_conv`` option of ConvLSTMCell) has no counterpart on the other backends.
:func:`conv2d` is the C++ backend's convolution (algorithms autotuned per shape), beside its
reference ``conv2d_ref`` (``F.conv2d``).
"""
from types import SimpleNamespace

from .conv import conv2d, conv2d_ref
from .conv_gates import conv_gates_ref, conv_gates_triton
from .convlstm_gates import (convlstm_gates_cpp, convlstm_gates_cuda, convlstm_gates_ref,
                             convlstm_gates_triton)
from .dual_memory_gates import (mklstm_gates_cpp, mklstm_gates_cuda, mklstm_gates_ref,
                                mklstm_gates_triton, stlstm_gates_cpp, stlstm_gates_cuda,
                                stlstm_gates_ref, stlstm_gates_triton)
from .output_gate import output_gate_cpp, output_gate_cuda, output_gate_ref, output_gate_triton

GATES = {
    "reference": SimpleNamespace(convlstm=convlstm_gates_ref, stlstm=stlstm_gates_ref,
                                 mklstm=mklstm_gates_ref, output=output_gate_ref),
    "cpp": SimpleNamespace(convlstm=convlstm_gates_cpp, stlstm=stlstm_gates_cpp,
                           mklstm=mklstm_gates_cpp, output=output_gate_cpp),
    "triton": SimpleNamespace(convlstm=convlstm_gates_triton, stlstm=stlstm_gates_triton,
                              mklstm=mklstm_gates_triton, output=output_gate_triton),
    "cuda": SimpleNamespace(convlstm=convlstm_gates_cuda, stlstm=stlstm_gates_cuda,
                            mklstm=mklstm_gates_cuda, output=output_gate_cuda),
}

__all__ = ["GATES",
           "convlstm_gates_ref", "convlstm_gates_cpp", "convlstm_gates_triton",
           "convlstm_gates_cuda",
           "stlstm_gates_ref", "stlstm_gates_cpp", "stlstm_gates_triton", "stlstm_gates_cuda",
           "mklstm_gates_ref", "mklstm_gates_cpp", "mklstm_gates_triton", "mklstm_gates_cuda",
           "output_gate_ref", "output_gate_cpp", "output_gate_triton", "output_gate_cuda",
           "conv_gates_ref", "conv_gates_triton", "conv2d", "conv2d_ref"]
