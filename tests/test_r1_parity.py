"""R1 parity with ctapipe 0.28's SimTelEventSource (relative 1e-5) for every shared file with events."""
import numpy as np
import pyarrow.parquet as pq
import pytest

from dvp.io.parquet import waveforms_view

from .conftest import REFERENCE

REFERENCE_STEMS = sorted(p.name[: -len(".dl1.parquet")] for p in REFERENCE.glob("*.dl1.parquet"))


def test_every_file_with_events_has_a_reference(r1_products):
    """No file is skipped silently: each product with telescope events is compared below."""
    with_events = set()
    for name, path in r1_products.items():
        if any((path / "r1").rglob("*.parquet")):
            with_events.add(name)
    assert with_events == set(REFERENCE_STEMS)


@pytest.mark.parametrize("name", REFERENCE_STEMS)
def test_r1_matches_ctapipe(name, r1_products):
    ref = pq.read_table(REFERENCE / f"{name}.dl1.parquet",
                        columns=["obs_id", "event_id", "tel_id", "r1_shape", "selected_gain_channel",
                                 "r1_sum", "r1_sumsq", "r1_max"]).to_pylist()
    ours = {}
    for f in sorted((r1_products[name] / "r1").rglob("*.parquet")):
        pf = pq.ParquetFile(f)
        for rg in range(pf.num_row_groups):
            t = pf.read_row_group(rg)
            wf = waveforms_view(t)
            keys = zip(*(t.column(c).to_pylist() for c in ("obs_id", "event_id", "tel_id")))
            gains = t.column("selected_gain_channel").to_pylist()
            for i, k in enumerate(keys):
                ours[k] = (wf[i], gains[i])
    assert len(ours) == len(ref), "telescope event count differs from ctapipe"
    n_ok = 0
    for r in ref:
        wf, gain = ours[(r["obs_id"], r["event_id"], r["tel_id"])]
        assert [1, *wf.shape] == r["r1_shape"]
        assert gain == r["selected_gain_channel"]
        w64 = wf.astype(np.float64)
        np.testing.assert_allclose(w64.sum(), r["r1_sum"], rtol=1e-5)
        np.testing.assert_allclose((w64 ** 2).sum(), r["r1_sumsq"], rtol=1e-5)
        np.testing.assert_allclose(wf.max(), r["r1_max"], rtol=1e-5)
        n_ok += 1
    print(f"{name}: {n_ok}/{len(ref)} telescope events match ctapipe 0.28 (rtol 1e-5)")


def test_waveform_view_is_zero_copy(r1_products):
    f = next((r1_products["lst_muons"] / "r1").rglob("*.parquet"))
    t = pq.ParquetFile(f).read_row_group(0)
    view = waveforms_view(t)
    buf = t.column("waveform").chunk(0).flatten()
    assert view.shape == (t.num_rows, 1855, 30) and view.dtype == np.float32
    assert view.ctypes.data == buf.buffers()[1].address + buf.offset * 4


def test_true_image_stored_when_present(r1_products):
    t = pq.read_table(next((r1_products["lst_with_photons"] / "r1").rglob("*.parquet")))
    img = np.array(t.column("true_image")[0].as_py())
    assert img.shape == (1855,) and img.sum() > 0
    assert img.sum() == pytest.approx(t.column("true_image_sum_pe")[0].as_py())
    # sim_telarray was not asked to store true images for this file
    t2 = pq.read_table(next((r1_products["40k_pixels"] / "r1").rglob("*.parquet")))
    assert t2.column("true_image").null_count == t2.num_rows


def test_pixel_status_follows_gain_and_hv(r1_products):
    for name in ("n_hv_disabled", "gamma_prod6_tel_event_header_v4"):
        for f in (r1_products[name] / "r1").rglob("*.parquet"):
            t = pq.read_table(f)
            for hv, status, gain in zip(*(t.column(c).to_pylist() for c in ("hv_disabled", "pixel_status",
                                                                                "selected_gain_channel"))):
                hv, status, gain = np.array(hv), np.array(status), np.array(gain)
                expected = np.where(gain == 0, 1, 2)
                expected[hv] = 0
                np.testing.assert_array_equal(status, expected)
