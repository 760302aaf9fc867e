"""Instrument model: exact neighbour truth tables on tiny cameras and parity with ctapipe 0.28."""
import numpy as np
import pyarrow.parquet as pq
import pytest

from dvp.instrument import CameraGeometry, SubarrayDescription, border_mask, compute_neighbors

from .conftest import INSTRUMENT_REF


def _rows(indptr, indices):
    return [indices[indptr[i]:indptr[i + 1]].tolist() for i in range(len(indptr) - 1)]


def test_square_3x3_neighbors_and_border():
    x, y = np.meshgrid(np.arange(3.0), np.arange(3.0))
    indptr, idx = compute_neighbors(x.ravel(), y.ravel(), "square")
    assert _rows(indptr, idx) == [[1, 3], [0, 2, 4], [1, 5], [0, 4, 6], [1, 3, 5, 7], [2, 4, 8], [3, 7],
                                  [4, 6, 8], [5, 7]]
    assert border_mask(indptr, idx, 1).tolist() == [True] * 4 + [False] + [True] * 4
    indptr, idx = compute_neighbors(x.ravel(), y.ravel(), "square", diagonal=True)
    assert _rows(indptr, idx)[4] == [0, 1, 2, 3, 5, 6, 7, 8]


def test_hexagon_flower_of_seven():
    ang = np.deg2rad(np.arange(6) * 60)
    x = np.concatenate([[0], np.cos(ang)])
    y = np.concatenate([[0], np.sin(ang)])
    indptr, idx = compute_neighbors(x, y, "hexagon")
    rows = _rows(indptr, idx)
    assert rows[0] == [1, 2, 3, 4, 5, 6]
    # outer pixel k touches the centre and its two ring neighbours
    assert rows[1] == [0, 2, 6] and rows[4] == [0, 3, 5]
    assert border_mask(indptr, idx, 1).tolist() == [False] + [True] * 6
    assert border_mask(indptr, idx, 2).tolist() == [True] * 7


def test_derotation_like_ctapipe():
    g = CameraGeometry.from_simtel("cam", [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], 1, np.deg2rad(90))
    # cam_rot 90° (sim_telarray) = ctapipe cam_rotation -90°; derotation turns the
    # pixels by +90°: (1, 0) -> (0, 1) and (0, 1) -> (-1, 0)
    np.testing.assert_allclose(g.pix_x, [0, -1], atol=1e-15)
    np.testing.assert_allclose(g.pix_y, [1, 0], atol=1e-15)
    assert g.pix_rotation_deg == pytest.approx(90)


@pytest.mark.parametrize("name", ["calib_events", "gamma_merged"])
def test_instrument_matches_ctapipe(name, r1_products):
    sub = SubarrayDescription.read(r1_products[name])
    ref = pq.read_table(INSTRUMENT_REF / f"{name}.subarray.parquet").to_pylist()
    ours = {r["tel_id"]: r for r in sub.telescopes.to_pylist()}
    assert sorted(ours) == sorted(r["tel_id"] for r in ref)
    for r in ref:
        o = ours[r["tel_id"]]
        assert o["tel_type"] == r["tel_type"]
        for c in ("pos_x_m", "pos_y_m", "pos_z_m"):
            assert o[c] == pytest.approx(r[c], abs=1e-6)
        opt = sub.optics[o["tel_type"]]
        assert opt.equivalent_focal_length_m == pytest.approx(r["equivalent_focal_length_m"])
        assert opt.mirror_area_m2 == pytest.approx(r["mirror_area_m2"])
    cams = {p.name.split(".camera_")[1][:-8] for p in INSTRUMENT_REF.glob(f"{name}.camera_*.parquet")}
    assert cams == set(sub.geometries)
    for cam, g in sub.geometries.items():
        t = pq.read_table(INSTRUMENT_REF / f"{name}.camera_{cam}.parquet")
        np.testing.assert_allclose(g.pix_x, t["pix_x_m"].to_numpy(), rtol=0, atol=1e-9)
        np.testing.assert_allclose(g.pix_y, t["pix_y_m"].to_numpy(), rtol=0, atol=1e-9)
        np.testing.assert_allclose(g.pix_area, t["pix_area_m2"].to_numpy(), rtol=1e-12)
        assert [g.neighbors(i).tolist() for i in range(g.n_pixels)] == t["neighbors"].to_pylist(), cam
        assert g.border(1).tolist() == t["border"].to_pylist()
        assert g.pix_type == t.schema.metadata[b"pix_type"].decode()
        assert g.pix_rotation_deg == pytest.approx(float(t.schema.metadata[b"pix_rotation_deg"]))


def test_readout_and_round_trip(r1_products):
    sub = SubarrayDescription.read(r1_products["gamma_prod6_tel_event_header_v4"])
    assert set(sub.tel_types()) >= {"LST_LST_LSTcam", "MST_MST_NectarCam"}
    r = sub.readouts["LSTcam"]
    assert r.n_pixels == 1855 and r.n_samples == 40 and r.n_channels == 2
    assert r.sampling_rate_ghz == pytest.approx(1.024)  # prod6 LST: 1/0.9765625 ns
    assert r.reference_pulse_shape.shape[0] == 2 and r.reference_pulse_shape.max() > 0
    g = sub.geometries["LSTcam"]
    assert g.neighbor_indptr[-1] == len(g.neighbor_indices)
    assert max(np.diff(g.neighbor_indptr)) == 6


def test_readout_variants_per_telescope(r1_products):
    """prod6 LST-1 has another reference pulse than LST-2..4 (ctapipe corrects per telescope)."""
    sub = SubarrayDescription.read(r1_products["gamma_prod6_tel_event_header_v4"])
    assert sub.camera_name(1) == sub.camera_name(2) == "LSTcam"
    assert sub.readout_name(1) == "LSTcam" and sub.readout_name(2) == sub.readout_name(4) == "LSTcam.2"
    a, b = sub.readout(1).reference_pulse_shape, sub.readout(2).reference_pulse_shape
    assert a.shape == b.shape == (2, 1640) and not np.array_equal(a, b)
    assert len({sub.readout_name(t) for t in sub.tel_ids_of_type("MST_MST_NectarCam")}) == 1
