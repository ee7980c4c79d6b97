"""Gate math of the cells, one module per fused op, each beside its ``*_ref``.

Every op has the same signature in each backend; :data:`GATES` maps a backend name to the
implementations the cells call. :func:`conv_gates_triton` (convolution and gates in one
kernel, the ``fused_conv`` option of ConvLSTMCell) has no counterpart on the other backends.
:func:`conv2d` is the C++ backend's convolution (algorithms autotuned per shape), beside its
reference ``conv2d_ref`` (``F.conv2d``); :func:`conv2d_sum` a sum of convolutions of several
inputs run as one (beside ``conv2d_sum_ref``).
"""
from types import SimpleNamespace

from .causal_lstm_gates import (causal_c_gates_cpp, causal_c_gates_cuda, causal_c_gates_ref,
                                causal_c_gates_triton, causal_m_gates_cpp, causal_m_gates_cuda,
                                causal_m_gates_ref, causal_m_gates_triton,
                                causal_output_gate_cpp, causal_output_gate_cuda,
                                causal_output_gate_ref, causal_output_gate_triton)
from .conv import conv2d, conv2d_ref
from .conv_sum import conv2d_sum, conv2d_sum_ref
from .conv_gates import conv_gates_ref, conv_gates_triton
from .convlstm_gates import (convlstm_gates_cpp, convlstm_gates_cuda, convlstm_gates_ref,
                             convlstm_gates_triton)
from .dual_memory_gates import (mklstm_gates_cpp, mklstm_gates_cuda, mklstm_gates_ref,
                                mklstm_gates_triton, stlstm_gates_cpp, stlstm_gates_cuda,
                                stlstm_gates_ref, stlstm_gates_triton)
from .mim_gates import (mim_block_gates_cpp, mim_block_gates_cuda, mim_block_gates_ref,
                        mim_block_gates_triton, mims_gates_cpp, mims_gates_cuda, mims_gates_ref,
                        mims_gates_triton)
from .ghu_gates import ghu_gates_cpp, ghu_gates_cuda, ghu_gates_ref, ghu_gates_triton
from .output_gate import output_gate_cpp, output_gate_cuda, output_gate_ref, output_gate_triton

GATES = {
    "reference": SimpleNamespace(convlstm=convlstm_gates_ref, stlstm=stlstm_gates_ref,
                                 mklstm=mklstm_gates_ref, output=output_gate_ref,
                                 causal_c=causal_c_gates_ref, causal_m=causal_m_gates_ref,
                                 causal_output=causal_output_gate_ref, ghu=ghu_gates_ref,
                                 mims=mims_gates_ref, mim_block=mim_block_gates_ref),
    "cpp": SimpleNamespace(convlstm=convlstm_gates_cpp, stlstm=stlstm_gates_cpp,
                           mklstm=mklstm_gates_cpp, output=output_gate_cpp,
                           causal_c=causal_c_gates_cpp, causal_m=causal_m_gates_cpp,
                           causal_output=causal_output_gate_cpp, ghu=ghu_gates_cpp,
                           mims=mims_gates_cpp, mim_block=mim_block_gates_cpp),
    "triton": SimpleNamespace(convlstm=convlstm_gates_triton, stlstm=stlstm_gates_triton,
                              mklstm=mklstm_gates_triton, output=output_gate_triton,
                              causal_c=causal_c_gates_triton, causal_m=causal_m_gates_triton,
                              causal_output=causal_output_gate_triton, ghu=ghu_gates_triton,
                              mims=mims_gates_triton, mim_block=mim_block_gates_triton),
    "cuda": SimpleNamespace(convlstm=convlstm_gates_cuda, stlstm=stlstm_gates_cuda,
                            mklstm=mklstm_gates_cuda, output=output_gate_cuda,
                            causal_c=causal_c_gates_cuda, causal_m=causal_m_gates_cuda,
                            causal_output=causal_output_gate_cuda, ghu=ghu_gates_cuda,
                            mims=mims_gates_cuda, mim_block=mim_block_gates_cuda),
}

__all__ = ["GATES",
           "convlstm_gates_ref", "convlstm_gates_cpp", "convlstm_gates_triton",
           "convlstm_gates_cuda",
           "stlstm_gates_ref", "stlstm_gates_cpp", "stlstm_gates_triton", "stlstm_gates_cuda",
           "mklstm_gates_ref", "mklstm_gates_cpp", "mklstm_gates_triton", "mklstm_gates_cuda",
           "output_gate_ref", "output_gate_cpp", "output_gate_triton", "output_gate_cuda",
           "causal_c_gates_ref", "causal_c_gates_cpp", "causal_c_gates_triton",
           "causal_c_gates_cuda", "causal_m_gates_ref", "causal_m_gates_cpp",
           "causal_m_gates_triton", "causal_m_gates_cuda", "causal_output_gate_ref",
           "causal_output_gate_cpp", "causal_output_gate_triton", "causal_output_gate_cuda",
           "ghu_gates_ref", "ghu_gates_cpp", "ghu_gates_triton", "ghu_gates_cuda",
           "conv_gates_ref", "conv_gates_triton",
           "mims_gates_ref", "mims_gates_cpp", "mims_gates_triton", "mims_gates_cuda",
           "mim_block_gates_ref", "mim_block_gates_cpp", "mim_block_gates_triton",
           "mim_block_gates_cuda", "conv2d", "conv2d_ref", "conv2d_sum", "conv2d_sum_ref"]
