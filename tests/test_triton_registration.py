"""The Triton ops as a GPU process registers them: ``triton_op`` (traceable by
torch.compile), not the interpreter's opaque ``custom_op``. Runs in a subprocess without
TRITON_INTERPRET (this test process runs the interpreter); no GPU needed: registration and
the fake (shape) implementations never launch a kernel."""
import os
import subprocess
import sys
import textwrap

from .conftest import requires_triton

SCRIPT = textwrap.dedent("""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    import fastcells  # registers every op at import
    from fastcells import _ext
    assert not _ext.triton_interpreted()
    f = torch.ops.fastcells
    names = ["convlstm_gates", "stlstm_gates", "mklstm_gates", "output_gate"]
    for name in names:
        for op in (getattr(f, name + "_triton"), getattr(f, name + "_triton_backward")):
            assert "triton" in str(op.default._schema)
    # The fake implementation is the launcher itself (with wrap_triton): shapes, strides
    # and dtypes of the outputs as the kernels allocate them.
    with FakeTensorMode():
        z = torch.empty(2, 20, 7, 9, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
        c = torch.empty(2, 5, 7, 9, dtype=torch.bfloat16)
        h, c2, acts = f.convlstm_gates_triton(z, c, None, 0.0)
        assert h.shape == (2, 5, 7, 9) and acts.shape == (2, 20, 7, 9)
        assert h.dtype == torch.bfloat16
        assert h.is_contiguous(memory_format=torch.channels_last)
        # The fused convolution + gates op (x absent: its projection zx is added instead).
        hp = torch.empty(2, 5, 7, 9).to(memory_format=torch.channels_last)
        h, c2, acts = f.conv_gates_triton(None, hp, torch.empty(2, 5, 7, 9),
                                          torch.empty(20, 5, 3, 3), None,
                                          torch.empty(2, 20, 7, 9), torch.empty(3, 5), 0.0)
        assert h.shape == c2.shape == (2, 5, 7, 9) and acts.shape == (2, 20, 7, 9)
        assert acts.is_contiguous(memory_format=torch.channels_last)
    assert "Tensor? zx, Tensor? peephole" in str(f.conv_gates_triton.default._schema)
    # The CTT chain's ops take lists (the history and the per-level weights).
    forward = str(f.ctt_chain_triton.default._schema)
    backward = str(f.ctt_chain_triton_backward.default._schema)
    assert forward == ("fastcells::ctt_chain_triton(Tensor[] history, SymInt head, "
                       "Tensor[] p_weights, Tensor[] p_biases, Tensor[] g_weights, "
                       "Tensor[] g_biases) -> Tensor[]")
    assert backward.startswith("fastcells::ctt_chain_triton_backward(Tensor grad, Tensor[] "
                               "history, SymInt head, Tensor[] vs,")
    assert backward.endswith("bool[] need_history, bool need_weights) -> (Tensor[], Tensor[], "
                             "Tensor[], Tensor[], Tensor[])")
    print("ok")
""")


@requires_triton
def test_gpu_processes_register_traceable_triton_ops():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
