# Two commands set up a fresh machine and run everything:
#   make demo   installs, builds the C++ extension, trains MS-LSTM on synthetic data (fused vs reference)
#   make test   installs, builds, runs the test suite
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0

.PHONY: setup demo test bench clean

# torch first (the local CPU wheel), then the extension against it without build isolation
# (isolation would pull a fresh multi-GB torch into the build environment).
setup:
	$(PYTHON) -m pip install -q "torch==$(TORCH_VERSION)" numpy pybind11 ninja pytest pytest-benchmark expecttest fvcore \
		tqdm matplotlib pillow scikit-image h5py triton
	$(PYTHON) -m pip install -q --no-build-isolation -e .

demo: setup
	$(PYTHON) -m fastcells demo

test: setup
	$(PYTHON) -m pytest tests -q

# Regenerates benchmarks/results/<device>_{kernels,train}.{md,json} (the default device: CUDA
# when present), README's results block, then runs the pytest-benchmark suites. CPU: hours.
bench: setup
	$(PYTHON) -m fastcells.bench all --out benchmarks/results
	$(PYTHON) -m fastcells.bench readme
	$(PYTHON) -m pytest benchmarks -q --benchmark-group-by=group --benchmark-columns=median,iqr,rounds

clean:
	rm -rf build fastcells/_C*.so *.egg-info
