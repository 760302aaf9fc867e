"""pytest-benchmark of the stereo reconstruction on 100k synthetic array events (2-4 telescopes).

Run: ``.venv/bin/python -m pytest benchmarks/test_bench_stereo.py --benchmark-only -q``.
``extra_info['events_per_s']`` is the single-core rate (the kernel has no parallel loop).
Nothing about time is asserted.
"""
import numpy as np
import pytest

from dvp.kernels.stereo import group_events, hillas_reconstruct

N_EVENTS = 100_000


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    n_tel = rng.integers(2, 5, N_EVENTS)
    n = int(n_tel.sum())
    tel_pos = np.array([[120.0, 10, 1], [-80, 150, -2], [-60, -140, 0.5], [200, -90, 3]])
    tel_index = np.concatenate([np.arange(k) for k in n_tel])
    event_id = np.repeat(np.arange(N_EVENTS), n_tel)
    perm = rng.permutation(n)  # telescope events arrive unsorted (one file per telescope type)
    return dict(obs_id=np.ones(n, np.int32)[perm], event_id=event_id[perm], tel_id=(tel_index + 1)[perm],
                lon=rng.uniform(-2, 2, n)[perm], lat=rng.uniform(-2, 2, n)[perm], psi=rng.uniform(-90, 90, n)[perm],
                intensity=rng.uniform(50, 5000, n)[perm], length=rng.uniform(0.1, 0.5, n)[perm],
                width=rng.uniform(0.02, 0.1, n)[perm], pos=tel_pos[tel_index][perm], radius=np.full(n, 2.2),
                alt=np.full(n, 70.0), az=np.full(n, 10.0), use=np.ones(n, bool))


def _run(b):
    order, starts = group_events(b["obs_id"], b["event_id"], b["tel_id"])
    g = {k: np.ascontiguousarray(v[order]) for k, v in b.items()}
    n_ev = len(starts) - 1
    return hillas_reconstruct(starts, g["lon"], g["lat"], g["psi"], g["intensity"], g["length"], g["width"],
                              g["radius"], g["alt"], g["az"], g["pos"], g["use"], np.full(n_ev, 70.0),
                              np.full(n_ev, 10.0))


def test_bench_stereo_grouping_and_reconstruction(benchmark, batch):
    res = benchmark(_run, batch)
    assert res["is_valid"].mean() > 0.9
    benchmark.extra_info["events"] = N_EVENTS
    benchmark.extra_info["events_per_s"] = N_EVENTS / benchmark.stats["mean"]
