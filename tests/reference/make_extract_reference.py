"""Golden references for dvp.kernels.extract from ctapipe 0.28 (run with the ctapipe venv).

Usage: /work/venv-ctapipe/bin/python tests/reference/make_extract_reference.py

Writes ``tests/reference/kernels/extract.npz``:

* a 256-pixel patch of the prod6 LSTcam (real pixel positions, ctapipe's neighbours, the
  real 1.024 GHz readout with its two reference pulses, stored as ``pulse_LSTcam_prod6``),
  40 samples;
* four synthetic events (float16-representable float32 samples, so that ties occur):
  two showers (elliptical image, time gradient, low gain for bright pixels, broken
  pixels that differ between the gain channels), noise only, and edge cases (pulses at
  the readout edges, all-negative, all-zero and NaN-free but huge pixels);
* charge / peak time of ctapipe's extractor classes (``__call__`` on a SubarrayDescription
  built from that camera) for several configurations of each, TwoPassWindowSum with
  ``ctapipe.fitting.FIT_RNG`` reset to ``default_rng(0)`` before every event;
* NeighborAverage on an image with broken pixels;
* integration corrections (``integration_correction`` and SlidingWindowMaxSum's) for the
  real readouts of several cameras and windows;
* the trait defaults of every extractor class and TwoPassWindowSum's core threshold per
  telescope type.

Only inputs and ctapipe's outputs are stored; no ctapipe code is copied.
"""
import json
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import astropy.units as u  # noqa: E402
import numpy as np  # noqa: E402
from astropy.coordinates import EarthLocation  # noqa: E402

import ctapipe.fitting  # noqa: E402
from ctapipe.image import extractor as ex  # noqa: E402
from ctapipe.image.invalid_pixels import NeighborAverage  # noqa: E402
from ctapipe.instrument import (  # noqa: E402
    CameraDescription,
    CameraReadout,
    SubarrayDescription,
    TelescopeDescription,
)
from ctapipe.io import EventSource  # noqa: E402

SIMTEL = Path("/work/shared/data/simtel")
OUT = Path(__file__).parent / "kernels" / "extract.npz"
N_PIX = 256
N_EV = 4


def subarray_of(name):
    with EventSource(SIMTEL / name, max_events=1, focal_length_choice="EQUIVALENT") as src:
        return src.subarray


# ---------------------------------------------------------------- camera patch
prod6 = subarray_of("gamma_prod6_tel_event_header_v4.simtel.zst")
lst = prod6.tel[1]
geom_full = lst.camera.geometry
r = np.hypot(geom_full.pix_x.to_value("m"), geom_full.pix_y.to_value("m"))
patch = np.sort(np.argsort(r, kind="stable")[:N_PIX])
geom = geom_full[patch]
ro = lst.camera.readout
readout = CameraReadout(
    name=ro.name, sampling_rate=ro.sampling_rate, reference_pulse_shape=ro.reference_pulse_shape,
    reference_pulse_sample_width=ro.reference_pulse_sample_width, n_channels=ro.n_channels,
    n_pixels=N_PIX, n_samples=ro.n_samples,
)
camera = CameraDescription(name=lst.camera.name, geometry=geom, readout=readout)
tel = TelescopeDescription(name=lst.name, optics=lst.optics, camera=camera)
subarray = SubarrayDescription(
    name="patch", tel_positions={1: [0, 0, 0] * u.m}, tel_descriptions={1: tel},
    reference_location=EarthLocation(lon=0 * u.deg, lat=0 * u.deg, height=2000 * u.m),
)
rate = ro.sampling_rate.to_value("GHz")
n_s = ro.n_samples
nb = geom.neighbor_matrix_sparse
pix_x = geom.pix_x.to_value("m")
pix_y = geom.pix_y.to_value("m")

# ---------------------------------------------------------------- events
rng = np.random.default_rng(20250601)
pulses = ro.reference_pulse_shape
ref_dt = ro.reference_pulse_sample_width.to_value("ns")


def pulse(channel, t_peak_ns, n):
    """Unit-integral reference pulse of a channel, sampled every 1/rate ns, peaking at t_peak_ns."""
    shape = pulses[channel] / (pulses[channel].sum() * ref_dt)
    t_ref = np.arange(shape.size) * ref_dt
    t = np.arange(n) / rate - t_peak_ns + t_ref[np.argmax(shape)]
    return np.interp(t, t_ref, shape, left=0, right=0)


def shower(intensity, cog, psi, length, width, t0, grad):
    dx, dy = pix_x - cog[0], pix_y - cog[1]
    lon = dx * np.cos(psi) + dy * np.sin(psi)
    lat = -dx * np.sin(psi) + dy * np.cos(psi)
    amp = np.exp(-0.5 * (lon / length) ** 2 - 0.5 * (lat / width) ** 2)
    amp *= intensity / amp.sum()
    return amp, t0 + grad * lon


waveforms = np.zeros((N_EV, N_PIX, n_s))
gain = np.zeros((N_EV, N_PIX), np.int8)
broken = np.zeros((N_EV, 2, N_PIX), bool)
setups = [
    shower(2500.0, (0.10, -0.05), 0.6, 0.18, 0.06, 18.0, 25.0),
    shower(900.0, (-0.12, 0.08), -1.1, 0.20, 0.05, 20.0, 110.0),  # steep: 2nd pass hits the edges
    (np.zeros(N_PIX), np.full(N_PIX, 20.0)),
    shower(300.0, (0.0, 0.15), 0.2, 0.10, 0.04, 15.0, 0.0),
]
for ev, (amp, t_arr) in enumerate(setups):
    gain[ev] = amp > 150.0
    for p in range(N_PIX):
        g = gain[ev, p]
        a = rng.poisson(amp[p]) if amp[p] > 0 else 0
        waveforms[ev, p] = a * pulse(g, t_arr[p] + rng.normal(0, 0.4), n_s)
    waveforms[ev] += rng.normal(0, 0.35, size=(N_PIX, n_s))
ev = 3
waveforms[ev, 0] = 25 * pulse(0, 0.3, n_s)           # peak at the first samples
waveforms[ev, 1] = 25 * pulse(0, (n_s - 1.2) / rate, n_s)  # ... and at the last
waveforms[ev, 2] = -np.abs(rng.normal(0, 1, n_s))      # no positive sample
waveforms[ev, 3] = 0.0                                 # all zero
waveforms[ev, 4] = 0.0
waveforms[ev, 5] = 0.0
waveforms[ev, 6, 17] = waveforms[ev, 6, 23] = 9.0      # exact tie
waveforms[ev, 7] = 4000 * pulse(1, 20.0, n_s)          # very bright, low gain
gain[ev, 7] = 1
# broken pixels: a few, some only in one gain channel, a cluster with no good neighbour
for e in (0, 1, 3):
    idx = rng.choice(N_PIX, 6, replace=False)
    broken[e, 0, idx[:4]] = True
    broken[e, 1, idx[2:]] = True
bright = np.argsort(setups[1][0])[-5:]
broken[1, :, bright[:2]] = True                        # inside the shower
broken[3, :, 3] = True
broken[3, :, nb.indices[nb.indptr[3]:nb.indptr[3 + 1]]] = True  # pixel 3 has no good neighbour
waveforms = waveforms.astype(np.float16).astype(np.float32)
assert np.isfinite(waveforms).all()

# ---------------------------------------------------------------- extractors
CONFIGS = [
    ("FullWaveformSum", {}),
    ("FixedWindowSum", {}),
    ("FixedWindowSum", {"peak_index": 20, "window_width": 6, "window_shift": 2}),
    ("FixedWindowSum", {"peak_index": 37, "window_width": 7, "window_shift": 0, "apply_integration_correction": False}),
    ("GlobalPeakWindowSum", {}),
    ("GlobalPeakWindowSum", {"pixel_fraction": 0.1, "window_width": 5, "window_shift": 1}),
    ("LocalPeakWindowSum", {}),
    ("LocalPeakWindowSum", {"window_width": 4, "window_shift": 1, "apply_integration_correction": False}),
    ("SlidingWindowMaxSum", {}),
    ("SlidingWindowMaxSum", {"window_width": 3}),
    ("NeighborPeakWindowSum", {}),
    ("NeighborPeakWindowSum", {"local_weight": 1}),
    ("NeighborPeakWindowSum", {"local_weight": 2, "window_width": 5, "window_shift": 2,
                               "apply_integration_correction": False}),
    ("BaselineSubtractedNeighborPeakWindowSum", {}),
    ("BaselineSubtractedNeighborPeakWindowSum", {"baseline_start": 30, "baseline_end": 40, "local_weight": 1}),
    ("TwoPassWindowSum", {}),
    ("TwoPassWindowSum", {"disable_second_pass": True}),
    ("TwoPassWindowSum", {"core_threshold": 4.0, "invalid_pixel_handler_type": None,
                          "apply_integration_correction": False}),
]
out = {}
for i, (name, config) in enumerate(CONFIGS):
    extractor = getattr(ex, name)(subarray=subarray, **config)
    charge = np.empty((N_EV, N_PIX), np.float32)
    peak_time = np.empty((N_EV, N_PIX), np.float32)
    valid = np.empty(N_EV, bool)
    for e in range(N_EV):
        if name == "TwoPassWindowSum":
            ctapipe.fitting.FIT_RNG.bit_generator.state = np.random.default_rng(0).bit_generator.state
        dl1 = extractor(waveforms[e][np.newaxis], tel_id=1, selected_gain_channel=gain[e],
                        broken_pixels=broken[e])
        charge[e] = dl1.image
        peak_time[e] = dl1.peak_time
        valid[e] = dl1.is_valid
    out[f"charge_{i}"] = charge
    out[f"peak_time_{i}"] = peak_time
    out[f"is_valid_{i}"] = valid
    print(i, name, config, "is_valid", valid.tolist())

# ---------------------------------------------------------------- NeighborAverage
na = NeighborAverage(subarray=subarray)
img = out["charge_10"].copy()
pt = out["peak_time_10"].copy()
na_img = np.empty_like(img)
na_pt = np.empty_like(pt)
for e in range(N_EV):
    na_img[e], na_pt[e] = na(1, img[e].copy(), pt[e].copy(), broken[e, :1])

# ---------------------------------------------------------------- integration corrections
calib = subarray_of("calib_events.simtel.gz")
cameras = {"LSTcam_prod6": prod6.tel[1], "LSTCam": calib.tel[1], "FlashCam": calib.tel[3],
           "ASTRICam": calib.tel[4], "CHEC": calib.tel[5]}
WINDOWS = [(7, 3), (5, 2), (5, 0), (6, 4), (7, 0), (3, 1), (8, 4), (1, 0), (12, 15)]
corr = {}
for cam, t in cameras.items():
    r_ = t.camera.readout
    corr[f"pulse_{cam}"] = r_.reference_pulse_shape
    corr[f"meta_{cam}"] = np.array([r_.reference_pulse_sample_width.to_value("ns"),
                                    r_.sampling_rate.to_value("GHz")])
    corr[f"window_{cam}"] = np.array([
        ex.integration_correction(r_.reference_pulse_shape, r_.reference_pulse_sample_width.to_value("ns"),
                                  (1 / r_.sampling_rate).to_value("ns"), w, s) for w, s in WINDOWS])
    sub1 = SubarrayDescription(name="one", tel_positions={1: [0, 0, 0] * u.m}, tel_descriptions={1: t},
                               reference_location=EarthLocation(lon=0 * u.deg, lat=0 * u.deg, height=0 * u.m))
    corr[f"sliding_{cam}"] = np.array([
        ex.SlidingWindowMaxSum(subarray=sub1, window_width=w)._calculate_correction(1) for w in (7, 3, 5, 1)])

# ---------------------------------------------------------------- trait defaults
defaults = {}
for name, _ in CONFIGS:
    extractor = getattr(ex, name)(subarray=subarray)
    values = {}
    for trait in getattr(ex, name).class_traits(config=True):
        v = getattr(extractor, trait)
        v = v.tel[1] if hasattr(v, "tel") else v
        values[trait] = v.item() if isinstance(v, np.generic) else v
    defaults[name] = values
two_pass_all = ex.TwoPassWindowSum(subarray=calib)
core_thresholds = {str(t): two_pass_all.core_threshold.tel[tid] for tid, t in calib.tel.items()}

OUT.parent.mkdir(parents=True, exist_ok=True)
np.savez_compressed(
    OUT,
    waveforms=waveforms.astype(np.float16),
    selected_gain_channel=gain,
    broken_pixels=broken,
    neighbor_indptr=nb.indptr.astype(np.int32),
    neighbor_indices=nb.indices.astype(np.int32),
    pix_x=pix_x,
    pix_y=pix_y,
    reference_pulse_sample_width_ns=np.float64(ref_dt),
    sampling_rate_ghz=np.float64(rate),
    tel_type=np.array(str(tel)),
    configs=np.array(json.dumps(CONFIGS)),
    defaults=np.array(json.dumps(defaults)),
    core_thresholds=np.array(json.dumps(core_thresholds)),
    neighbor_average_image=na_img,
    neighbor_average_peak_time=na_pt,
    windows=np.array(WINDOWS),
    **out,
    **corr,
)
print(OUT, OUT.stat().st_size, "bytes")
