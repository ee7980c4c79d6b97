"""Build script for fastcells' compiled extensions.

The CPU extension ``fastcells._C`` (csrc/*.cpp) is built with torch's CppExtension and
ninja. The CUDA extension ``fastcells._C_cuda`` (csrc/cuda/) is built as a CUDAExtension
when torch has CUDA and a CUDA toolkit (nvcc) is found; no GPU is needed to build it.
Install after torch, without build isolation, so it compiles against the torch you run:

    pip install torch==2.13.0
    pip install --no-build-isolation -e .

Environment flags:
    FASTCELLS_SKIP_CPP=1   do not build the CPU extension (the reference backend still works)
    FASTCELLS_PORTABLE=1   no -march=native: a binary that runs on any x86-64/arm64 CPU
    FASTCELLS_CUDA=1       build the CUDA extension, failing if torch or the toolkit lack CUDA
    FASTCELLS_SKIP_CUDA=1  do not build the CUDA extension
"""
import glob
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CUDA_DIR = os.path.join("csrc", "cuda")

# Machine code for sm_80 (A100) and sm_90 (H100/H200), plus compute_90 PTX that the driver
# compiles for newer GPUs.
CUDA_ARCH_FLAGS = ["-gencode", "arch=compute_80,code=sm_80",
                   "-gencode", "arch=compute_90,code=[sm_90,compute_90]"]
# No --use_fast_math: it would swap expf/tanhf/division for approximate versions and flush
# denormals, trading accuracy (the contract's 1e-5 in float32) for arithmetic the gate
# kernels do not wait on: they are bound by memory bandwidth.
NVCC_FLAGS = ["-O3"]


def cpu_extension():
    from torch.utils.cpp_extension import CppExtension

    # -fopenmp: at::parallel_for is a header template, parallel only when compiled with OpenMP.
    # -fno-trapping-math lets GCC if-convert the branch-free activations and vectorize them.
    flags = ["-O3", "-fopenmp", "-fno-trapping-math"]
    if os.environ.get("FASTCELLS_PORTABLE", "0") != "1":
        # The gate loops vectorize to the widest SIMD of the machine that builds them.
        flags.append("-march=native")
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    return CppExtension("fastcells._C", sources, extra_compile_args={"cxx": flags},
                        extra_link_args=["-fopenmp"])


def cuda_sources():
    """The .cu kernels and the torch bindings, relative to the repository root."""
    return sorted(glob.glob(os.path.join(CUDA_DIR, "*.cu"))) + [
        os.path.join(CUDA_DIR, "bindings.cpp")]


def cuda_extension():
    from torch.utils.cpp_extension import CUDAExtension

    # Arch flags given here replace torch's defaults (TORCH_CUDA_ARCH_LIST / the local GPU),
    # so the build needs no GPU and always covers the same architectures.
    return CUDAExtension("fastcells._C_cuda", cuda_sources(),
                         include_dirs=[os.path.join(ROOT, CUDA_DIR)],
                         extra_compile_args={"cxx": ["-O3"],
                                             "nvcc": NVCC_FLAGS + CUDA_ARCH_FLAGS})


def cuda_build_decision(env, torch_cuda, cuda_home):
    """(build?, why) for the CUDA extension, from the environment flags, torch's CUDA version
    (None for a CPU-only torch, "" when torch is not installed) and the toolkit's location.
    Raises when FASTCELLS_CUDA=1 asks for a build that cannot happen."""
    force = env.get("FASTCELLS_CUDA", "0") == "1"
    skip = env.get("FASTCELLS_SKIP_CUDA", "0") == "1"
    if force and skip:
        raise RuntimeError("FASTCELLS_CUDA=1 and FASTCELLS_SKIP_CUDA=1 contradict each other")
    if skip:
        return False, "FASTCELLS_SKIP_CUDA=1"
    missing = []
    if torch_cuda == "":
        missing.append("torch is not installed")
    elif torch_cuda is None:
        missing.append("this torch is built without CUDA")
    elif cuda_home is None:  # (torch only looks for a toolkit when it has CUDA itself)
        missing.append("no CUDA toolkit found (put nvcc on PATH or set CUDA_HOME)")
    if missing:
        if force:
            raise RuntimeError("FASTCELLS_CUDA=1, but " + "; ".join(missing))
        return False, "; ".join(missing)
    return True, f"torch built with CUDA {torch_cuda}, toolkit at {cuda_home}"


def _torch_cuda():
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME
    except ImportError:
        return "", None
    return torch.version.cuda, CUDA_HOME


def extensions():
    exts = []
    if os.environ.get("FASTCELLS_SKIP_CPP", "0") != "1":
        exts.append(cpu_extension())
    build_cuda, why = cuda_build_decision(os.environ, *_torch_cuda())
    if build_cuda:
        exts.append(cuda_extension())
    print(f"fastcells: {'building' if build_cuda else 'not building'} the CUDA extension "
          f"({why})", file=sys.stderr)
    if not exts:
        return [], {}
    from torch.utils.cpp_extension import BuildExtension

    return exts, {"build_ext": BuildExtension.with_options(use_ninja=True)}


# setuptools runs this file as __main__ (pip, build, setup.py); the tests import it for its
# flags and helpers without building anything.
if __name__ == "__main__":
    ext_modules, cmdclass = extensions()
    setup(ext_modules=ext_modules, cmdclass=cmdclass)
