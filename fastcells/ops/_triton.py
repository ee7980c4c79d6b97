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
import re
from typing import Optional

import torch
from torch import Tensor

from .. import _ext

_TYPES = {"Tensor": Tensor, "Tensor?": Optional[Tensor], "float": float, "bool": bool,
          "int": int}


def _signature(schema: str) -> inspect.Signature:
    """The Python signature a schema string describes: ``triton_op`` infers the op's schema
    from its function's signature (it takes no schema string), and our launchers are
    generic ``*args`` functions, so each op's wrapper carries this signature."""
    args, returns = re.fullmatch(r"\((.*)\) -> \((.*)\)", schema).groups()
    params = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                annotation=_TYPES[kind])
              for kind, name in (a.strip().rsplit(" ", 1) for a in args.split(","))]
    outs = tuple(_TYPES[r.strip()] for r in returns.split(","))
    return inspect.Signature(params, return_annotation=tuple[outs])


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


def library_op(name: str, schema: str, module: str, launcher: str):
    """Registers ``fastcells.kernels.<module>.<launcher>(launch, *args)`` as the op
    ``fastcells::<name>`` with ``schema``."""
    signature = _signature(schema)

    def run(launch):
        def op(*args):
            return getattr(kernels(module), launcher)(launch, *args)

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
