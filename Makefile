# dvp: set-up and common tasks. `make demo` and `make test` work on a fresh machine
# with Python 3.11; everything is installed into .venv with pinned versions.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED ?= ../shared
DEMO_OUT ?= demo-out
DEMO_ML_SHOWERS ?= 20000

.PHONY: venv install demo test bench bench-ml bench-ml-frontier bench-apply bench-scale ml-data clean clean-numba

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "make: no python3.11 or python3 found (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $@

venv install: $(VENV)/.installed

# dvp's two-step training, as the README shows it: $(call train-models,ENERGY_SIGNAL,
# PARTICLE_SIGNAL,PARTICLE_BACKGROUND,MODELS,DIR): the energy model set MODELS/energy, the
# energy applied to the classifier's products (DIR/gamma-e, DIR/proton-e), then MODELS/particle
define train-models
	$(VENV)/bin/dvp train energy --signal $(1) -o $(4)/energy --overwrite
	$(VENV)/bin/dvp apply-models $(2) -m $(4)/energy -o $(5)/gamma-e -q --overwrite
	$(VENV)/bin/dvp apply-models $(3) -m $(4)/energy -o $(5)/proton-e -q --overwrite
	$(VENV)/bin/dvp train particle --signal $(5)/gamma-e --background $(5)/proton-e -o $(4)/particle --overwrite
endef

demo: install
	@test -d $(SHARED)/data/simtel || { echo "make: $(SHARED)/data/simtel missing"; exit 1; }
	rm -rf $(DEMO_OUT)
	$(VENV)/bin/dvp simtel-to-r1 $(SHARED)/data/simtel/run202_proton_za20deg_azm0deg-North-Prod5_test-production-5-mini.simtel.zst \
		-o $(DEMO_OUT)/prod5-protons
	$(VENV)/bin/dvp simtel-to-r1 $(SHARED)/data/simtel/lst_muons.simtel.zst -o $(DEMO_OUT)/lst-muons
	$(VENV)/bin/dvp info $(DEMO_OUT)/prod5-protons
	$(VENV)/bin/dvp info $(DEMO_OUT)/lst-muons
	$(PY) -c "import polars as pl; print(pl.scan_parquet('$(DEMO_OUT)/prod5-protons/r1/**/*.parquet', hive_partitioning=True).group_by('tel_type').agg(pl.len().alias('tel_events'), pl.col('event_id').n_unique().alias('array_events')).collect())"
	$(VENV)/bin/dvp r1-to-dl1 $(DEMO_OUT)/prod5-protons -o $(DEMO_OUT)/prod5-protons-dl1
	$(VENV)/bin/dvp r1-to-dl1 $(DEMO_OUT)/lst-muons -o $(DEMO_OUT)/lst-muons-dl1 --config configs/base.toml
	$(VENV)/bin/dvp dl1-to-dl2 $(DEMO_OUT)/prod5-protons-dl1 -o $(DEMO_OUT)/prod5-protons-dl2
	$(PY) -c "import polars as pl; print(pl.read_parquet('$(DEMO_OUT)/prod5-protons-dl2/dl2/*.parquet').select('event_id', 'n_tels_used', 'reco_is_valid', 'reco_alt_deg', 'true_alt_deg', 'reco_az_deg', 'true_az_deg', 'reco_h_max_m', 'true_energy_tev'))"
	$(PY) -c "import polars as pl; print(pl.scan_parquet('$(DEMO_OUT)/*-dl1/dl1/**/*.parquet', hive_partitioning=True).group_by('tel_type').agg(pl.len().alias('tel_events'), pl.col('is_valid').sum().alias('parameterised'), pl.col('hillas_intensity_pe').median(), pl.col('hillas_width_deg').median(), pl.col('morphology_n_islands').max()).sort('tel_type').collect())"

	@echo "== energy and gammaness on toy MC: simulate, DL2, train, apply =="
	for spec in gamma-energy:11 gamma-particle:12 gamma-test:13; do \
		$(VENV)/bin/dvp simulate --particle gamma --n-showers $(DEMO_ML_SHOWERS) --seed $${spec#*:} --obs-id $${spec#*:} --level dl1 -q \
			-o $(DEMO_OUT)/ml/$${spec%:*}-dl1 && \
		$(VENV)/bin/dvp dl1-to-dl2 $(DEMO_OUT)/ml/$${spec%:*}-dl1 -o $(DEMO_OUT)/ml/$${spec%:*} -q || exit 1; done
	for spec in proton-particle:21 proton-test:22; do \
		$(VENV)/bin/dvp simulate --particle proton --n-showers $(DEMO_ML_SHOWERS) --seed $${spec#*:} --obs-id $${spec#*:} --level dl1 -q \
			--energy-range 0.1 100 --viewcone-deg 5 -o $(DEMO_OUT)/ml/$${spec%:*}-dl1 && \
		$(VENV)/bin/dvp dl1-to-dl2 $(DEMO_OUT)/ml/$${spec%:*}-dl1 -o $(DEMO_OUT)/ml/$${spec%:*} -q || exit 1; done
	$(call train-models,$(DEMO_OUT)/ml/gamma-energy,$(DEMO_OUT)/ml/gamma-particle,$(DEMO_OUT)/ml/proton-particle,$(DEMO_OUT)/ml/models,$(DEMO_OUT)/ml)
	$(VENV)/bin/dvp apply-models $(DEMO_OUT)/ml/gamma-test $(DEMO_OUT)/ml/proton-test -m $(DEMO_OUT)/ml/models -o $(DEMO_OUT)/ml/test-dl2
	@echo "energy resolution (gammas, per true energy) and ROC AUC (gammas vs protons, per reconstructed energy):"
	$(PY) -m dvp.ml.report $(DEMO_OUT)/ml/test-dl2

# the data set of the energy/gammaness benchmark in benchmarks/RESULTS.md (not committed)
ML_DATA ?= ml-data
# `make ml-data` (re)makes it; the benchmarks below make it only if it is missing (a stamp
# file written last), so they do not spend 3 min re-simulating or overwrite it
ml-data: install
	$(VENV)/bin/dvp simulate --particle gamma --n-showers 200000 --reuse 10 --seed 101 --obs-id 101 --level dl1 -o $(ML_DATA)/gamma-dl1 --overwrite
	$(VENV)/bin/dvp dl1-to-dl2 $(ML_DATA)/gamma-dl1 -o $(ML_DATA)/gamma-dl2 --overwrite
	$(VENV)/bin/dvp simulate --particle proton --n-showers 200000 --reuse 10 --seed 102 --obs-id 102 --energy-range 0.1 100 \
		--viewcone-deg 5 --level dl1 -o $(ML_DATA)/proton-dl1 --overwrite
	$(VENV)/bin/dvp dl1-to-dl2 $(ML_DATA)/proton-dl1 -o $(ML_DATA)/proton-dl2 --overwrite
	touch $(ML_DATA)/.complete

$(ML_DATA)/.complete:
	$(MAKE) ml-data ML_DATA=$(ML_DATA)

bench-ml: install $(ML_DATA)/.complete
	$(PY) -m pip install -q -c constraints.txt -e ".[test,bench]"
	$(PY) benchmarks/bench_ml.py --gamma $(ML_DATA)/gamma-dl2 --proton $(ML_DATA)/proton-dl2

# training time against accuracy for 182 energy and 92 particle LightGBM settings, against the
# budget of 5x faster than ExtraTrees and the RandomForest's accuracy (benchmarks/RESULTS.md, session 25)
bench-ml-frontier: install $(ML_DATA)/.complete
	$(PY) -m pip install -q -c constraints.txt -e ".[test,bench]"
	$(PY) benchmarks/bench_ml_frontier.py --gamma $(ML_DATA)/gamma-dl2 --proton $(ML_DATA)/proton-dl2
	$(PY) benchmarks/bench_ml_frontier.py --gamma $(ML_DATA)/gamma-dl2 --proton $(ML_DATA)/proton-dl2 --kind particle

# prediction speed of apply-models on one core (benchmarks/RESULTS.md, "apply-models at
# 200,000 telescope events/s"): default models trained on the benchmark data if missing
ML_MODELS ?= $(ML_DATA)/models
$(ML_MODELS)/particle/model_set.json: | $(ML_DATA)/.complete
	$(call train-models,$(ML_DATA)/gamma-dl2,$(ML_DATA)/gamma-dl2,$(ML_DATA)/proton-dl2,$(ML_MODELS),$(ML_DATA))

bench-apply: install $(ML_MODELS)/particle/model_set.json
	$(PY) benchmarks/bench_apply.py --product $(ML_DATA)/gamma-dl2 --models $(ML_MODELS)/energy $(ML_MODELS)/particle

# scale-out: 1 vs 2 workers, Dask, per-input overhead (r1-to-dl1); memory for 1x / 10x inputs
# and 1 vs 2 workers (dl1-to-dl2, apply-models)
bench-scale: install $(ML_DATA)/.complete
	$(PY) benchmarks/bench_scale.py
	$(PY) benchmarks/bench_dl2_scale.py --product $(ML_DATA)/gamma-dl2

test: install
	@test -d $(SHARED)/data/simtel || { echo "make: $(SHARED)/data/simtel missing"; exit 1; }
	$(PY) -m pytest -q

bench: install
	$(PY) -m pip install -q -c constraints.txt -e ".[test,bench]"
	$(PY) -m pytest -q benchmarks --benchmark-only
	$(PY) benchmarks/bench_simtel_to_r1.py
	$(PY) benchmarks/bench_r1_to_dl1.py --memory
	$(PY) benchmarks/bench_dl1_to_dl2.py --memory

clean: clean-numba
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache

# numba's on-disk cache checks only a function's own file, not the kernel modules it calls
clean-numba:
	find dvp -name '*.nbi' -delete -o -name '*.nbc' -delete

# toy Monte Carlo figure set (dvp/sim/figures.py): gamma vs proton DL1 distributions and
# LSTCam toy vs the shared sim_telarray gamma and lst_muons files, PNGs in benchmarks/figures/sim/
.PHONY: sim-figures
sim-figures: install
	$(PY) -m dvp.sim.figures benchmarks/figures/sim
