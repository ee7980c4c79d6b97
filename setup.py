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
    TORCH_CUDA_ARCH_LIST   e.g. "9.0": build the CUDA extension for these GPUs only
                           (default: sm_80 and sm_90 machine code, compute_90 PTX)
    CUDA_HOME / CUDA_PATH  the CUDA toolkit (default: the toolkit of the nvcc on PATH, as
                           nvcc itself reports it, so a wrapper script works; find_cuda_home)
    MAX_JOBS               parallel compile jobs (ninja; default: all cores)
"""
import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CUDA_DIR = os.path.join("csrc", "cuda")

# Machine code for sm_80 (A100) and sm_90 (H100/H200), plus compute_90 PTX that the driver
# compiles for newer GPUs. TORCH_CUDA_ARCH_LIST, when set, replaces these (torch turns it
# into -gencode flags): benchmarks/gpu_suite.py builds for the one GPU it runs on.
CUDA_ARCH_FLAGS = ["-gencode", "arch=compute_80,code=sm_80",
                   "-gencode", "arch=compute_90,code=[sm_90,compute_90]"]


def cuda_arch_flags(env=None) -> list:
    env = os.environ if env is None else env
    return [] if env.get("TORCH_CUDA_ARCH_LIST") else list(CUDA_ARCH_FLAGS)
# No --use_fast_math: it would swap expf/tanhf/division for approximate versions and flush
# denormals, trading accuracy (the contract's 1e-5 in float32) for arithmetic the gate
# kernels do not wait on: they are bound by memory bandwidth.
NVCC_FLAGS = ["-O3"]


def _is_toolkit(home) -> bool:
    """A CUDA toolkit root: nvcc and the runtime headers (the bindings need the headers)."""
    return bool(home) and os.path.isfile(os.path.join(home, "bin", "nvcc")) and any(
        os.path.isfile(os.path.join(inc, "cuda_runtime.h"))
        for inc in [os.path.join(home, "include"),
                    *glob.glob(os.path.join(home, "targets", "*", "include"))])


def _nvcc_top(nvcc: str):
    """The toolkit root the nvcc at ``nvcc`` belongs to, asked of nvcc itself (its dry run
    prints ``TOP=<toolkit>/bin/..``), so that a wrapper script or a symlink in another
    folder (``/usr/local/bin/nvcc`` running ``/usr/local/cuda-13.0/bin/nvcc``) leads to the
    real toolkit. None when nvcc does not answer."""
    try:
        out = subprocess.run([nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^#\$ TOP=(.*)$", out.stdout + out.stderr, re.MULTILINE)
    return os.path.realpath(match.group(1).strip()) if match else None


def find_cuda_home(env=None, which=shutil.which, fallback="/usr/local/cuda"):
    """(toolkit root, how it was found) of the CUDA toolkit the CUDA extension builds with,
    or (None, what was tried). The one place that decides it (the tests use it too).

    In order: ``CUDA_HOME``, then ``CUDA_PATH`` (when set, it must be a toolkit: a wrong
    setting is reported, not silently replaced), then the toolkit of the ``nvcc`` on PATH
    as nvcc itself reports it, then ``/usr/local/cuda``. torch's own guess takes the folder
    above the folder of the nvcc on PATH, which for a wrapper script in ``/usr/local/bin``
    is ``/usr/local``: no CUDA headers there, and the bindings fail to compile."""
    env = os.environ if env is None else env
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = env.get(var)
        if home:
            if _is_toolkit(home):
                return os.path.realpath(home), f"{var}={home}"
            return None, (f"{var}={home} is not a CUDA toolkit (no bin/nvcc or no "
                          f"include/cuda_runtime.h there): fix or unset it")
    tried = []
    nvcc = which("nvcc")
    if nvcc:
        top = _nvcc_top(nvcc)
        if _is_toolkit(top):
            real = os.path.join(top, "bin", "nvcc")
            via = "" if os.path.realpath(nvcc) == os.path.realpath(real) else f" (runs {real})"
            return top, f"nvcc on PATH: {nvcc}{via}"
        tried.append(f"nvcc on PATH ({nvcc}) names no toolkit with headers ({top})")
    else:
        tried.append("no nvcc on PATH")
    if _is_toolkit(fallback):
        return os.path.realpath(fallback), fallback
    tried.append(f"no toolkit at {fallback}")
    return None, "; ".join(tried)


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

    # Arch flags given here replace torch's defaults (the local GPU's), so the build needs
    # no GPU and always covers the same architectures, unless TORCH_CUDA_ARCH_LIST says.
    return CUDAExtension("fastcells._C_cuda", cuda_sources(),
                         include_dirs=[os.path.join(ROOT, CUDA_DIR)],
                         extra_compile_args={"cxx": ["-O3"],
                                             "nvcc": NVCC_FLAGS + cuda_arch_flags()})


def cuda_build_decision(env, torch_cuda, cuda_home, found=""):
    """(build?, why) for the CUDA extension, from the environment flags, torch's CUDA version
    (None for a CPU-only torch, "" when torch is not installed) and the toolkit's location
    (``found``: how :func:`find_cuda_home` found it, or what it tried).
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
    elif cuda_home is None:
        missing.append("no CUDA toolkit found (put nvcc on PATH or set CUDA_HOME)"
                       + (f": {found}" if found else ""))
    if missing:
        if force:
            raise RuntimeError("FASTCELLS_CUDA=1, but " + "; ".join(missing))
        return False, "; ".join(missing)
    return True, (f"torch built with CUDA {torch_cuda}, toolkit at {cuda_home}"
                  + (f", found by {found}" if found else ""))


def _torch_cuda(cuda_home):
    """(torch's CUDA version, the toolkit root) with torch's extension builder pointed at
    ``cuda_home``: ``torch.utils.cpp_extension`` reads CUDA_HOME once, on import."""
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home
    try:
        import torch
        import torch.utils.cpp_extension as cpp_extension
    except ImportError:
        return "", None
    if cuda_home:  # already imported before CUDA_HOME was set (the tests import it)
        cpp_extension.CUDA_HOME = cuda_home
    return torch.version.cuda, cuda_home


def extensions():
    exts = []
    if os.environ.get("FASTCELLS_SKIP_CPP", "0") != "1":
        exts.append(cpu_extension())
    cuda_home, found = find_cuda_home()
    build_cuda, why = cuda_build_decision(os.environ, *_torch_cuda(cuda_home), found)
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
