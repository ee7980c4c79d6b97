# Two commands set up a fresh machine and run everything:
#   make demo   installs, builds the C++ extension, trains MS-LSTM on synthetic data (fused vs reference)
#   make test   installs, builds, runs the test suite
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0

.PHONY: setup demo test test-triton36 triton36-leg gpu-results bench clean

# torch first (the local CPU wheel), then the extension against it without build isolation
# (isolation would pull a fresh multi-GB torch into the build environment).
setup:
	$(PYTHON) -m pip install -q "torch==$(TORCH_VERSION)" numpy pybind11 ninja pytest pytest-benchmark expecttest fvcore \
		tqdm matplotlib pillow scikit-image h5py "triton>=3.6,<3.10"
	$(PYTHON) -m pip install -q --no-build-isolation -e .

demo: setup
	$(PYTHON) -m fastcells demo

# The suite runs as TEST_SHARDS parallel pytest processes (tests/sharded.py: most tests are
# single-threaded, so one process would leave a core idle); `pytest tests` runs it in one.
TEST_SHARDS ?= 2
test: setup
	$(PYTHON) -m tests.sharded --shards $(TEST_SHARDS) --logs build/test-logs
	$(MAKE) triton36-leg

# The oldest Triton generation fastcells supports (3.6: what the lent GPU machines run,
# beside torch 2.11) in a virtual environment of its own, with torch 2.13 CPU and
# numpy < 2.4 (the 3.6 interpreter breaks on 2.4): the sm_90 compile of every Triton kernel
# and the interpreter tests of every Triton op and cell. The extension built in place by
# `setup` serves it too (same torch, same Python).
TRITON36_VENV ?= .venv-triton36
TRITON36_TESTS = tests/test_triton_sm90.py tests/test_gate_ops.py tests/test_cells.py \
	tests/test_triton_ctt.py tests/test_triton_conv_gates.py tests/test_triton_registration.py \
	tests/test_compile.py tests/test_layers.py tests/test_causal_lstm.py tests/test_mim.py \
	tests/test_mim_cell.py tests/test_patch_msrnn_predrnnpp.py
test-triton36: setup
	$(MAKE) triton36-leg

triton36-leg:
	test -x $(TRITON36_VENV)/bin/python || $(PYTHON) -m venv $(TRITON36_VENV)
	$(TRITON36_VENV)/bin/python -m pip install -q "torch==$(TORCH_VERSION)" "triton==3.6.0" \
		"numpy<2.4" pytest expecttest tqdm matplotlib
	PYTHONPATH=$(CURDIR) TRITON_INTERPRET=1 $(TRITON36_VENV)/bin/python -c "import triton, \
		torch, numpy; from fastcells import _ext; assert triton.__version__ == '3.6.0', \
		triton.__version__; assert _ext.cpp_available() and _ext.triton_available(), \
		_ext.triton_unavailable_reason(); print('triton', triton.__version__, 'torch', \
		torch.__version__, 'numpy', numpy.__version__)"
	PYTHONPATH=$(CURDIR) $(TRITON36_VENV)/bin/python -m tests.sharded --shards $(TEST_SHARDS) \
		--logs build/test-logs-triton36 --paths $(TRITON36_TESTS) -- -k "triton or sm90"

# Renders benchmarks/results/gpu/*.md and README's GPU block from the committed
# benchmarks/results/gpu/gpu_suite.json (benchmarks/gpu_suite.py's docstring: how a GPU run
# produces it).
gpu-results:
	$(PYTHON) benchmarks/gpu_report.py render

# Regenerates benchmarks/results/<device>_{kernels,train}.{md,json} (the default device: CUDA
# when present), README's results block, then runs the pytest-benchmark suites. CPU: hours.
bench: setup
	$(PYTHON) -m fastcells.bench all --out benchmarks/results
	$(PYTHON) -m fastcells.bench readme
	$(PYTHON) -m pytest benchmarks -q --benchmark-group-by=group --benchmark-columns=median,iqr,rounds

clean:
	rm -rf build fastcells/_C*.so *.egg-info $(TRITON36_VENV)
