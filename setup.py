"""Build script for fastcells' compiled extensions.

The CPU extension ``fastcells._C`` (csrc/*.cpp) is built with torch's CppExtension and
ninja. Install after torch, without build isolation, so it compiles against the torch
you run:

    pip install torch==2.13.0
    pip install --no-build-isolation -e .

Environment flags:
    FASTCELLS_SKIP_CPP=1   do not build the CPU extension (the reference backend still works)
    FASTCELLS_PORTABLE=1   no -march=native: a binary that runs on any x86-64/arm64 CPU
"""
import glob
import os

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


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


def extensions():
    if os.environ.get("FASTCELLS_SKIP_CPP", "0") == "1":
        return [], {}
    from torch.utils.cpp_extension import BuildExtension

    return [cpu_extension()], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
