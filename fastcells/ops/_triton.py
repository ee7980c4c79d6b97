"""How the ops reach the Triton kernels: a lazy import (fastcells works without triton) and
their torch.library registration.

A launcher function of :mod:`fastcells.kernels` takes ``launch`` first and returns its
outputs: eager calls pass :func:`direct` (plain ``kernel[grid](...)``, the least host
overhead); the registered op passes ``torch.library.wrap_triton`` on GPUs, so
``torch.compile`` sees the kernels and can trace through them (``triton_op``). In
interpreter mode (``TRITON_INTERPRET=1``, CPU tensors) the kernels cannot be traced, so the
op is an opaque ``custom_op`` whose fake implementation runs the launcher without
launching: shapes, strides and dtypes of the fake outputs are those of the real ones.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Optional

import torch

from .. import _ext


def kernels(name: str):
    """The module ``fastcells.kernels.<name>`` (imports triton on first use)."""
    return importlib.import_module(f"fastcells.kernels.{name}")


def direct(kernel):
    return kernel


def _traced(kernel):
    return torch.library.wrap_triton(kernel)


class _NoLaunch:
    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def _no_launch(kernel):
    return _NoLaunch()


# Python annotations of the schema types the ops use (triton_op infers its schema from them).
_ANNOTATIONS = {
    "Tensor": torch.Tensor, "Optional[Tensor]": Optional[torch.Tensor],
    "List[Tensor]": list[torch.Tensor], "int": int, "float": float, "bool": bool,
    "List[int]": list[int], "List[bool]": list[bool],
}


def _signature(schema: str) -> inspect.Signature:
    """The typed Python signature of ``schema`` ("(Tensor x, ...) -> ...")."""
    parsed = torch._C.parse_schema(f"fastcells::signature{schema}")
    params = [inspect.Parameter(a.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                annotation=_ANNOTATIONS[str(a.type)]) for a in parsed.arguments]
    returns = [_ANNOTATIONS[str(r.type)] for r in parsed.returns]
    return inspect.Signature(params, return_annotation=returns[0] if len(returns) == 1
                             else tuple[tuple(returns)])


def library_op(name: str, schema: str, module: str, launcher: str):
    """Registers ``fastcells.kernels.<module>.<launcher>(launch, *args)`` as the op
    ``fastcells::<name>`` with ``schema``."""
    signature = _signature(schema)

    def run(launch):
        def op(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            return getattr(kernels(module), launcher)(launch, *bound.args)

        # triton_op ignores a schema and infers one from the function's annotations.
        op.__signature__ = signature
        return op

    qualname = f"fastcells::{name}"
    if _ext.triton_interpreted():
        op = torch.library.custom_op(qualname, run(direct), mutates_args=(), schema=schema)
        op.register_fake(run(_no_launch))
        return op
    return torch.library.triton_op(qualname, run(_traced), mutates_args=())


def eager(module: str, launcher: str):
    """``launcher(*args)`` launching directly: the forward/backward of the eager path."""
    return lambda *args: getattr(kernels(module), launcher)(direct, *args)
