"""sim_telarray (EventIO) reader producing dvp's instrument, simulation and R1 tables.

R1 waveforms are computed exactly as ctapipe 0.28's ``SimTelEventSource`` does:
pedestal (per sample) subtraction, dc→p.e. (``laser_calibrations.calib``), the
``ThresholdGainSelector`` (threshold 4000 ADC counts on the high gain) for physics
events, float32. Calibration events are skipped (ctapipe's default); telescopes
with data that are not in the stereo trigger are skipped (ctapipe #2660).
"""
from __future__ import annotations

import gzip
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from .. import schemas as S
from ..errors import InputError
from ..instrument import CameraGeometry, CameraReadout, Optics, SubarrayDescription
from ..instrument.guess import guess_telescope, telescope_from_meta
from ..kernels.r1 import calibrate_r1
from .parquet import ROW_GROUP_BYTES

GAIN_THRESHOLD_ADC = 4000.0
MISSING_IMAGE_BRIGHTNESS_LIMIT = 1_000_000
_HALF_PI = 0.5 * np.pi
_HALF_PI_MAX = (1 + 1e-6) * _HALF_PI
EVENTIO_SYNC = (b"\x37\x8a\x1f\xd4", b"\xd4\x1f\x8a\x37")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"

PRIMARY_NAMES = {0: "gamma", 1: "electron", -1: "positron", 2: "muon", -2: "antimuon",
                 100: "neutron", 101: "proton", 201: "deuteron", 402: "helium",
                 1206: "carbon", 1407: "nitrogen", 1608: "oxygen", 2412: "magnesium",
                 2814: "silicon", 5626: "iron"}


def clip_altitude(alt):
    """float32(pi/2) > float64(pi/2): clip such values back to pi/2, as ctapipe does."""
    if _HALF_PI < alt < _HALF_PI_MAX:
        return _HALF_PI
    if -_HALF_PI_MAX < alt < -_HALF_PI:
        return -_HALF_PI
    return alt


def _read_head(path: Path, n: int = 4) -> bytes:
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(GZIP_MAGIC):
        try:
            with gzip.open(path) as f:
                return f.read(n)
        except (OSError, EOFError) as e:
            raise InputError(path, f"corrupt gzip stream ({e})") from None
    if head.startswith(ZSTD_MAGIC):
        import zstandard
        try:
            with open(path, "rb") as f:
                return zstandard.ZstdDecompressor().stream_reader(f).read(n)
        except zstandard.ZstdError as e:
            raise InputError(path, f"corrupt zstd stream ({e})") from None
    return head[:n]


def check_simtel_file(path) -> Path:
    """Fail with a one-line :class:`InputError` unless ``path`` looks like an EventIO file."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    if not path.is_file():
        raise InputError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file")
    if _read_head(path) not in EVENTIO_SYNC:
        raise InputError(path, "not an EventIO (sim_telarray) file: no EventIO sync marker")
    return path


def has_true_image(history) -> bool:
    """Whether sim_telarray was configured to store true p.e. images (ctapipe's logic)."""
    tel, per_tel = 0, {0: []}
    for _, line in history:
        line = line.decode("utf-8", "replace").strip()
        if line.startswith("# Telescope-specific configuration follows"):
            tel += 1
            per_tel[tel] = []
        per_tel[tel].append(line)
    glob = per_tel.pop(0)
    if glob and "merge_simtel" in glob[0]:
        return False
    save_photons, store_pe = 0, -1
    for line in glob:
        low = line.lower()
        if low.startswith("save_photons"):
            save_photons = int(line.split()[1])
        if low.startswith("store_photoelectrons"):
            store_pe = int(line.split()[1])
    if save_photons & 0b10 or store_pe > 0:
        return True
    return any(int(line.split()[1]) > 0 for lines in per_tel.values() for line in lines
               if "store_photoelectrons" in line.lower())


def build_subarray(simfile, focal_length_choice: str = "equivalent") -> SubarrayDescription:
    """Instrument description of an open ``eventio.SimTelFile`` (as ctapipe builds it)."""
    header = simfile.header
    rows, optics, geometries, readouts = [], {}, {}, {}
    for tel_id, desc in simfile.telescope_descriptions.items():
        cam = desc["camera_settings"]
        mirror_area = float(cam["mirror_area"])
        f_eq = float(cam["focal_length"])
        f_eff = float(cam.get("effective_focal_length", np.nan))
        tel = telescope_from_meta(simfile.telescope_meta.get(tel_id, {}), mirror_area)
        if tel is None:
            tel = guess_telescope(int(cam["n_pixels"]), f_eq, int(cam["n_mirrors"]), mirror_area)
        tel_type = f"{tel.size_type}_{tel.optics_name}_{tel.camera_name}"
        optics[tel_type] = Optics(tel_type, tel.optics_name, tel.size_type, tel.reflector_shape, tel.n_mirrors,
                                  int(cam["n_mirrors"]), f_eq, f_eff, mirror_area)
        if tel.camera_name not in geometries:
            geometries[tel.camera_name] = CameraGeometry.from_simtel(
                tel.camera_name, cam["pixel_x"], cam["pixel_y"], cam["pixel_area"],
                cam["pixel_shape"][0], float(cam["cam_rot"]))
        pix = desc["pixel_settings"]
        org = desc["camera_organization"]
        readout = CameraReadout(
            name=tel.camera_name, n_channels=int(org["n_gains"]), n_pixels=int(org["n_pixels"]),
            n_samples=int(pix["sum_bins"]), sampling_rate_ghz=float(1.0 / np.float64(pix["time_slice"])),
            reference_pulse_sample_width_ns=float(pix["ref_step"]),
            reference_pulse_shape=np.atleast_2d(np.asarray(pix["ref_shape"], np.float64)))
        # telescopes sharing a camera may still differ in pulse shape (prod6 LST-1 vs
        # LST-2..4), and ctapipe's integration correction is per telescope: keep each variant
        readout_name = None
        for name, other in readouts.items():
            if other.name == readout.name and other.same_as(readout):
                readout_name = name
                break
        if readout_name is None:
            n_same = sum(1 for other in readouts.values() if other.name == readout.name)
            readout_name = tel.camera_name if n_same == 0 else f"{tel.camera_name}.{n_same + 1}"
            readouts[readout_name] = readout
        idx = int(np.nonzero(header["tel_id"] == tel_id)[0][0])
        pos = header["tel_pos"][idx]
        rows.append({S.TEL_ID: tel_id, S.TEL_TYPE: tel_type, "optics_name": tel.optics_name,
                     S.CAMERA_NAME: tel.camera_name, S.READOUT_NAME: readout_name, "pos_x_m": float(pos[0]), "pos_y_m": float(pos[1]),
                     "pos_z_m": float(pos[2]), "tel_index": idx})
    rows.sort(key=lambda r: r[S.TEL_ID])
    meta = simfile.global_meta or {}
    lat, lon, alt = meta.get(b"*LATITUDE"), meta.get(b"*LONGITUDE"), meta.get(b"ALTITUDE")
    if lat is None or lon is None or alt is None:
        location = {"lon_deg": 0.0, "lat_deg": 0.0, "height_m": float(simfile.mc_run_headers[-1]["obsheight"])}
    else:
        location = {"lon_deg": float(lon), "lat_deg": float(lat), "height_m": float(alt)}
    return SubarrayDescription(
        name=meta.get(b"ARRAY_CONFIG_NAME", b"MonteCarloArray").decode(),
        telescopes=S.validate(pa.Table.from_pylist(rows), S.SUBARRAY), optics=optics,
        geometries=geometries, readouts=readouts, reference_location=location)


def run_rows(simfile, obs_id: int, input_name: str) -> list[dict]:
    """One ``simulation.run`` row per MC run header."""
    az, alt = simfile.header["direction"]
    out = []
    for i, h in enumerate(simfile.mc_run_headers):
        out.append({
            S.OBS_ID: obs_id, "run_header_index": i, "input_file": input_name,
            "n_showers": int(h["n_showers"]), "shower_reuse": int(h["n_use"]),
            "energy_min_tev": float(h["E_range"][0]), "energy_max_tev": float(h["E_range"][1]),
            "spectral_index": float(h["spectral_index"]),
            "min_alt_deg": float(np.rad2deg(clip_altitude(h["alt_range"][0]))),
            "max_alt_deg": float(np.rad2deg(clip_altitude(h["alt_range"][1]))),
            "min_az_deg": float(np.rad2deg(h["az_range"][0])), "max_az_deg": float(np.rad2deg(h["az_range"][1])),
            "diffuse": bool(h["diffuse"]),
            "min_viewcone_deg": float(h["viewcone"][0]), "max_viewcone_deg": float(h["viewcone"][1]),
            "min_scatter_m": float(h["core_range"][0]), "max_scatter_m": float(h["core_range"][1]),
            "core_pos_mode": int(h["core_pos_mode"]), "obs_height_m": float(h["obsheight"]),
            "atmosphere": int(h["atmosphere"]), "b_total_ut": float(h["B_total"]),
            "b_inclination_deg": float(np.rad2deg(h["B_inclination"])),
            "b_declination_deg": float(np.rad2deg(h["B_declination"])),
            "pointing_alt_deg": float(np.rad2deg(clip_altitude(alt))), "pointing_az_deg": float(np.rad2deg(az)),
            "corsika_version": int(h["shower_prog_vers"]), "simtel_version": int(h["detector_prog_vers"]),
        })
    return out


def impact_distances(core_x, core_y, alt, az, positions):
    """Distance (m) of each telescope position (n, 3) from the shower axis."""
    d = np.array([np.cos(alt) * np.cos(-az), np.cos(alt) * np.sin(-az), np.sin(alt)])
    rel = positions - np.array([core_x, core_y, 0.0])
    return np.linalg.norm(np.cross(rel, d), axis=1) / np.linalg.norm(d)


@dataclass
class _TypeBuffer:
    """Rows of one telescope type being collected into a record batch."""

    n_pixels: int
    n_samples: int
    capacity: int
    waveform: np.ndarray = None
    cols: dict = field(default_factory=dict)
    n: int = 0

    def __post_init__(self):
        self.reset()

    def reset(self):
        self.waveform = np.empty((self.capacity, self.n_pixels, self.n_samples), np.float32)
        self.cols = {k: [] for k in S.column_names(S.R1_EVENTS) if k != S.WAVEFORM}
        self.n = 0

    def table(self) -> pa.Table:
        n, npix = self.n, self.n_pixels
        wf = pa.FixedSizeListArray.from_arrays(pa.array(self.waveform[:n].reshape(-1)), npix * self.n_samples)
        c = self.cols

        def fixed(key, dtype, arrow_type):
            return pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(c[key]).astype(dtype)), npix) if n \
                else pa.array([], pa.list_(arrow_type, npix))

        true_img = c[S.TRUE_IMAGE]
        if any(x is None for x in true_img):
            ti = pa.array([None if x is None else x.tolist() for x in true_img], pa.list_(pa.int32(), npix))
        else:
            ti = fixed(S.TRUE_IMAGE, np.int32, pa.int32())
        data = {k: v for k, v in c.items()}
        data[S.WAVEFORM] = wf
        data[S.SELECTED_GAIN] = fixed(S.SELECTED_GAIN, np.int8, pa.int8())
        data[S.PIXEL_STATUS] = fixed(S.PIXEL_STATUS, np.uint8, pa.uint8())
        data[S.HV_DISABLED] = fixed(S.HV_DISABLED, np.bool_, pa.bool_())
        data[S.TIME_SHIFT] = fixed(S.TIME_SHIFT, np.float32, pa.float32())
        data[S.TRUE_IMAGE] = ti
        t = pa.table({k: data[k] for k in S.column_names(S.R1_EVENTS)})
        self.reset()
        return t


class SimtelR1Reader:
    """Stream one sim_telarray file into dvp tables.

    Use :meth:`batches` to iterate ``(tel_type, pa.Table)`` R1 batches of at most
    ``batch_bytes`` of waveforms; afterwards :meth:`shower_table`, :meth:`trigger_table`
    and :meth:`distribution_table` hold the per-file tables.

    Raises
    ------
    InputError
        For a missing, empty, foreign or corrupt file (one line, naming the file);
        a truncated file raises too unless ``allow_truncated``.
    """

    def __init__(self, path, batch_bytes: int = ROW_GROUP_BYTES, allow_truncated: bool = False,
                 focal_length_choice: str = "equivalent"):
        from eventio import SimTelFile

        self.path = check_simtel_file(path)
        self.batch_bytes = batch_bytes
        self.allow_truncated = allow_truncated
        self.truncated = False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._file = SimTelFile(str(self.path), skip_non_triggered=False, skip_calibration=True)
        except (StopIteration, EOFError) as e:
            raise InputError(self.path, self._explain_empty(e)) from None
        except Exception as e:  # eventio raises many kinds on foreign/corrupt data
            raise InputError(self.path, f"cannot read sim_telarray headers ({type(e).__name__}: {e})") from None
        f = self._file
        if f.header is None or not f.telescope_descriptions:
            raise InputError(self.path, "no sim_telarray run header / telescope descriptions")
        try:
            self.obs_id = int(f.header["run"])
            self.subarray = build_subarray(f, focal_length_choice)
            self.runs = run_rows(f, self.obs_id, self.path.name)
            self._true_images_expected = has_true_image(f.history or [])
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise InputError(self.path, f"incomplete sim_telarray metadata ({type(e).__name__}: {e})") from None
        self._showers = {k: [] for k in S.column_names(S.SIM_SHOWER)}
        self._triggers = {k: [] for k in S.column_names(S.R1_TRIGGER)}
        self.n_tel_events = 0

    def _explain_empty(self, err):
        from eventio import EventIOFile
        try:
            first = next(iter(EventIOFile(str(self.path))))
            if type(first).__name__ == "RunHeader" and getattr(first, "header", None) and first.header.type == 1200:
                return "CORSIKA IACT photon-bunch file, not sim_telarray output (no sim_telarray run header)"
        except Exception:
            pass
        return f"truncated or not sim_telarray output: headers end early ({type(err).__name__})"

    # -- per-file tables -------------------------------------------------------------
    def close(self):
        self._file.close()

    def shower_table(self) -> pa.Table:
        return S.validate(pa.table(self._showers), S.SIM_SHOWER, source=str(self.path))

    def trigger_table(self) -> pa.Table:
        t = dict(self._triggers)
        t["tels_with_trigger"] = pa.array(t["tels_with_trigger"], pa.list_(pa.int16()))
        return S.validate(pa.table(t), S.R1_TRIGGER, source=str(self.path))

    def run_table(self) -> pa.Table:
        return S.validate(pa.Table.from_pylist(self.runs), S.SIM_RUN, source=str(self.path))

    def distribution_table(self) -> pa.Table:
        rows = []
        for h in self._file.histograms or []:
            if h["id"] != 6:
                continue
            xb = np.linspace(h["lower_x"], h["upper_x"], h["n_bins_x"] + 1)
            yb = np.linspace(h["lower_y"], h["upper_y"], h["n_bins_y"] + 1)
            rows.append({S.OBS_ID: self.obs_id, "hist_id": int(h["id"]), "n_entries": int(h["entries"]),
                         "bins_core_dist_m": xb.tolist(), "bins_energy_tev": (10 ** yb).tolist(),
                         "histogram": np.asarray(h["data"], np.float64).ravel().tolist()})
        if not rows:
            return S.validate(S.schema(S.SIM_SHOWER_DISTRIBUTION).empty_table(), S.SIM_SHOWER_DISTRIBUTION)
        return S.validate(pa.Table.from_pylist(rows), S.SIM_SHOWER_DISTRIBUTION)

    # -- events ------------------------------------------------------------------------
    def batches(self):
        """Yield ``(tel_type, table)`` R1 batches (``r1.telescope_events`` columns)."""
        buffers: dict[str, _TypeBuffer] = {}
        sub = self.subarray
        tel_ids = sub.tel_ids
        tel_index = dict(zip(tel_ids.tolist(), range(len(tel_ids))))
        positions = sub.positions()
        types = dict(zip(tel_ids.tolist(), sub.telescopes.column(S.TEL_TYPE).to_pylist()))
        orig_index = dict(zip(tel_ids.tolist(), sub.telescopes.column("tel_index").to_pylist()))
        descs = self._file.telescope_descriptions
        hv_disabled = {}
        pseudo_id = 0
        it = iter(self._file)
        while True:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ev = next(it)
            except StopIteration:
                break
            except (EOFError, ValueError, OSError, IndexError, KeyError, AssertionError) as e:
                if self.allow_truncated:
                    self.truncated = True
                    break
                raise InputError(self.path, f"truncated or corrupt event data after {self.n_tel_events} "
                                            f"telescope events ({type(e).__name__}: {e})") from None
            event_id = int(ev.get("event_id", 0))
            if event_id == 0:
                pseudo_id -= 1
                event_id = pseudo_id
            tel_events = ev.get("telescope_events") or {}
            trig = ev.get("trigger_information")
            triggered = bool(tel_events) and trig is not None
            shower = ev.get("mc_shower")
            mc_event = ev.get("mc_event")
            if shower is not None and mc_event is not None:
                self._add_shower(event_id, shower, mc_event, triggered)
            if not triggered or ev.get("type") != "data":
                continue
            tels_with_trigger = np.asarray(trig["triggered_telescopes"], np.int16)
            self._add_trigger(event_id, trig, tels_with_trigger)
            true_impacts = None
            if shower is not None and mc_event is not None:
                true_impacts = impact_distances(float(mc_event["xcore"]), float(mc_event["ycore"]),
                                                clip_altitude(float(shower["altitude"])),
                                                float(shower["azimuth"]), positions)
            pe_sums = (ev.get("photoelectron_sums") or {}).get("n_pe")
            trig_times = dict(zip(trig["triggered_telescopes"].tolist(), np.asarray(trig["trigger_times"]).tolist()))
            for tel_id, tev in tel_events.items():
                if tel_id not in trig_times or tel_id not in types:
                    continue  # data without a stereo-trigger entry: ctapipe skips it too
                adc = tev.get("adc_samples")
                if adc is None:
                    adc = tev["adc_sums"][:, :, np.newaxis]
                n_gains, n_pixels, n_samples = adc.shape
                true_image = (ev.get("photoelectrons") or {}).get(tel_id - 1, {}).get("photoelectrons")
                true_sum = float(pe_sums[orig_index[tel_id]]) if pe_sums is not None else np.nan
                if self._true_images_expected and true_image is None:
                    if true_sum > MISSING_IMAGE_BRIGHTNESS_LIMIT:
                        continue  # ctapipe drops such truncated bright events
                    true_image = np.full(n_pixels, -1, np.int32)
                tel_type = types[tel_id]
                buf = buffers.get(tel_type)
                if buf is None:
                    row_bytes = n_pixels * n_samples * 4
                    buf = buffers[tel_type] = _TypeBuffer(n_pixels, n_samples, max(1, self.batch_bytes // row_bytes))
                if (buf.n_pixels, buf.n_samples) != (n_pixels, n_samples):
                    raise InputError(self.path, f"telescope {tel_id}: waveform shape {(n_pixels, n_samples)} "
                                                f"differs from earlier {(buf.n_pixels, buf.n_samples)} of {tel_type}")
                cam_mon = ev["camera_monitorings"][tel_id]
                pedestal = cam_mon["pedestal"] / cam_mon["n_ped_slices"]
                laser = ev["laser_calibrations"][tel_id]
                dc_to_pe = laser["calib"]
                _, gain = calibrate_r1(adc, pedestal, dc_to_pe, GAIN_THRESHOLD_ADC, True, out=buf.waveform[buf.n])
                if tel_id not in hv_disabled:
                    m = np.zeros(n_pixels, bool)
                    m[np.asarray(descs[tel_id]["disabled_pixels"]["HV_disabled"], np.int64)] = True
                    hv_disabled[tel_id] = m
                status = np.where(gain == 0, np.uint8(1), np.uint8(2))
                status[hv_disabled[tel_id]] = 0
                track = ev["tracking_positions"][tel_id]
                az = track.get("azimuth_cor", np.nan)
                az = track["azimuth_raw"] if np.isnan(az) else az
                alt = track.get("altitude_cor", np.nan)
                alt = track["altitude_raw"] if np.isnan(alt) else alt
                trig_pix = (tev.get("pixel_lists") or {}).get(0)
                c = buf.cols
                c[S.OBS_ID].append(self.obs_id)
                c[S.EVENT_ID].append(event_id)
                c[S.TEL_ID].append(tel_id)
                c[S.N_PIXELS].append(n_pixels)
                c[S.N_SAMPLES].append(n_samples)
                c[S.SELECTED_GAIN].append(gain)
                c[S.PIXEL_STATUS].append(status)
                c[S.HV_DISABLED].append(hv_disabled[tel_id])
                tm = laser.get("tm_calib")
                c[S.TIME_SHIFT].append(np.zeros(n_pixels, np.float32) if tm is None
                                       else np.asarray(tm, np.float32)[gain, np.arange(n_pixels)])
                c[S.TRUE_IMAGE].append(None if true_image is None else np.asarray(true_image, np.int32))
                c["true_image_sum_pe"].append(true_sum)
                c["true_impact_distance_m"].append(np.nan if true_impacts is None else float(true_impacts[tel_index[tel_id]]))
                c["pointing_alt_deg"].append(float(np.rad2deg(clip_altitude(float(alt)))))
                c["pointing_az_deg"].append(float(np.rad2deg(float(az))))
                c["trigger_time_ns"].append(float(trig_times[tel_id]))
                c["n_trigger_pixels"].append(int(trig_pix["pixels"]) if trig_pix else -1)
                buf.n += 1
                self.n_tel_events += 1
                if buf.n == buf.capacity:
                    yield tel_type, S.validate(buf.table(), S.R1_EVENTS, source=str(self.path))
        for tel_type, buf in buffers.items():
            if buf.n:
                yield tel_type, S.validate(buf.table(), S.R1_EVENTS, source=str(self.path))

    def _add_shower(self, event_id, shower, mc_event, triggered):
        s = self._showers
        pid = int(shower["primary_id"])
        s[S.OBS_ID].append(self.obs_id)
        s[S.EVENT_ID].append(event_id)
        s["shower_num"].append(int(mc_event.get("shower_num", shower.get("shower", -1))))
        s["true_energy_tev"].append(float(shower["energy"]))
        s["true_alt_deg"].append(float(np.rad2deg(clip_altitude(float(shower["altitude"])))))
        s["true_az_deg"].append(float(np.rad2deg(float(shower["azimuth"]))))
        s["true_core_x_m"].append(float(mc_event["xcore"]))
        s["true_core_y_m"].append(float(mc_event["ycore"]))
        s["true_h_first_int_m"].append(float(shower["h_first_int"]))
        s["true_x_max_g_cm2"].append(float(shower["xmax"]))
        s["true_starting_grammage_g_cm2"].append(float(shower.get("depth_start", np.nan)))
        s["true_shower_primary_id"].append(pid)
        s["particle"].append(PRIMARY_NAMES.get(pid, f"nucleus_{pid}"))
        s[S.TRIGGERED].append(triggered)

    def _add_trigger(self, event_id, trig, tels):
        t = self._triggers
        sec, ns = trig["gps_time"]
        az, alt = self._file.header["direction"]
        t[S.OBS_ID].append(self.obs_id)
        t[S.EVENT_ID].append(event_id)
        t["time_unix_ns"].append(int(sec) * 1_000_000_000 + int(ns))
        t["event_type"].append("subarray")
        t["tels_with_trigger"].append(tels.tolist())
        t["n_trigger_tels"].append(len(tels))
        t["pointing_alt_deg"].append(float(np.rad2deg(clip_altitude(float(alt)))))
        t["pointing_az_deg"].append(float(np.rad2deg(float(az))))
