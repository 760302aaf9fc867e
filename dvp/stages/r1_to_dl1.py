"""R1 → DL1: charge extraction, cleaning and image parameters, one camera type per batch.

Reproduces ctapipe 0.28's ``CameraCalibrator`` (extraction, peak-time shift, invalid
pixel interpolation) followed by ``ImageProcessor`` (cleaning, image quality query,
parameters in the telescope frame) with whole-batch numba kernels.

:func:`prepare_camera` derives everything that depends only on the instrument and the
config (telescope-frame geometry, border masks, resolved extractor and cleaner); it is
computed once per telescope type. :func:`r1_to_dl1` is then a pure function of an R1
batch (``r1.telescope_events`` columns) and that setup.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from .. import schemas as S
from ..config import R1ToDL1Config
from ..errors import InputError
from ..instrument.subarray import SubarrayDescription
from ..kernels.clean import clean
from ..kernels.extract import extract, integration_correction, neighbor_average, two_pass_core_threshold
from ..kernels.hillas import hillas_parameters
from ..kernels.image import correct_and_shift, image_summary
from ..kernels.islands import label_islands
from ..kernels.parameters import (concentration_parameters, descriptive_statistics, leakage_parameters,
                                  morphology_parameters)
from ..kernels.timing import timing_parameters

# columns of an R1 batch this stage reads
R1_INPUT_COLUMNS = (S.OBS_ID, S.EVENT_ID, S.TEL_ID, S.WAVEFORM, S.SELECTED_GAIN, S.HV_DISABLED, S.TIME_SHIFT,
                    S.POINTING_ALT, S.POINTING_AZ, S.TRUE_IMAGE_SUM, S.TRUE_IMPACT)


@dataclass(frozen=True, eq=False)
class CameraSetup:
    """Per-telescope-type inputs of the stage; arrays have shape ``(n_pixels,)``."""

    tel_type: str
    camera_name: str
    n_pixels: int
    pix_x_m: np.ndarray            # camera frame (TwoPassWindowSum works there)
    pix_y_m: np.ndarray
    pix_x_deg: np.ndarray          # telescope frame fov_lon
    pix_y_deg: np.ndarray          # telescope frame fov_lat
    pixel_width_deg: np.ndarray
    pix_area_deg2: np.ndarray
    border_1: np.ndarray
    border_2: np.ndarray
    neighbor_indptr: np.ndarray
    neighbor_indices: np.ndarray
    readouts: tuple                # CameraReadout per readout variant of this type
    readout_of_tel: dict           # tel_id -> index into readouts
    extractor: str
    extractor_params: dict
    cleaner: str
    cleaner_params: dict
    config: R1ToDL1Config
    _cache: dict = field(default_factory=dict, repr=False)


def prepare_camera(subarray: SubarrayDescription, tel_type: str, config: R1ToDL1Config) -> CameraSetup:
    """Resolve geometry, readout and components for ``tel_type``."""
    optics = subarray.optics.get(tel_type)
    ids = subarray.tel_ids_of_type(tel_type)
    if optics is None or len(ids) == 0:
        raise InputError(tel_type, "telescope type not in the instrument description")
    cam = subarray.camera_name(int(ids[0]))
    geom = subarray.geometries[cam]
    names = sorted({subarray.readout_name(int(t)) for t in ids})
    readouts = tuple(subarray.readouts[n] for n in names)
    readout_of_tel = {int(t): names.index(subarray.readout_name(int(t))) for t in ids}
    focal = (optics.effective_focal_length_m if config.focal_length_choice == "effective"
             else optics.equivalent_focal_length_m)
    if not np.isfinite(focal) or focal <= 0:
        raise InputError(tel_type, f"no usable {config.focal_length_choice} focal length ({focal}); "
                                   "set r1_to_dl1.focal_length_choice = \"equivalent\"")
    tel = geom.telescope_frame(focal)
    ext_name, ext_params = config.extractor.resolve(tel_type)
    if ext_name == "TwoPassWindowSum" and not config.extractor.is_set(tel_type, "core_threshold"):
        ext_params["core_threshold"] = two_pass_core_threshold(tel_type)  # ctapipe's per-type default
    cl_name, cl_params = config.cleaner.resolve(tel_type)
    return CameraSetup(
        tel_type=tel_type, camera_name=cam, n_pixels=geom.n_pixels,
        pix_x_m=np.ascontiguousarray(geom.pix_x, np.float64), pix_y_m=np.ascontiguousarray(geom.pix_y, np.float64),
        pix_x_deg=np.ascontiguousarray(tel.pix_x, np.float64), pix_y_deg=np.ascontiguousarray(tel.pix_y, np.float64),
        pixel_width_deg=np.ascontiguousarray(tel.pixel_width, np.float64),
        pix_area_deg2=np.ascontiguousarray(tel.pix_area, np.float64),
        border_1=geom.border(1), border_2=geom.border(2),
        neighbor_indptr=np.ascontiguousarray(geom.neighbor_indptr, np.int32),
        neighbor_indices=np.ascontiguousarray(geom.neighbor_indices, np.int32),
        readouts=readouts, readout_of_tel=readout_of_tel,
        extractor=ext_name, extractor_params=ext_params, cleaner=cl_name, cleaner_params=cl_params, config=config)


def _fixed(table: pa.Table, column: str, dtype, width: int) -> np.ndarray:
    """``(n_rows, width)`` numpy view of a fixed-size-list column (copy only if chunked)."""
    col = table.column(column)
    chunks = [c.flatten() for c in col.chunks] if col.num_chunks else []
    if len(chunks) == 1:
        flat = chunks[0]
    elif chunks:
        flat = pa.concat_arrays(chunks)
    else:
        return np.zeros((0, width), dtype)
    if flat.null_count:
        raise ValueError(f"column {column} has null values")
    if dtype is np.bool_ and flat.true_count == 0:
        # the usual hv_disabled: unpacking the bitmap costs ~2 us an LSTCam event, zeros nothing
        return np.zeros((len(flat) // width, width), np.bool_)
    arr = flat.to_numpy(zero_copy_only=dtype is not np.bool_)
    return np.ascontiguousarray(arr.reshape(-1, width), dtype=dtype)


# extractors whose integration correction is one factor per gain channel applied to the
# window sum (``integration_correction(pulse, width, shift)``), so it can vary per event
_MULTIPLICATIVE_CORRECTION = ("FixedWindowSum", "GlobalPeakWindowSum", "LocalPeakWindowSum",
                              "NeighborPeakWindowSum", "BaselineSubtractedNeighborPeakWindowSum")


def _per_event_correction_possible(setup: CameraSetup) -> bool:
    rates = {float(r.sampling_rate_ghz) for r in setup.readouts}
    return (setup.extractor in _MULTIPLICATIVE_CORRECTION and len(rates) == 1
            and setup.extractor_params.get("apply_integration_correction", False))


def _correction_table(setup: CameraSetup) -> np.ndarray:
    """``(n_readout_variants, n_channels)`` integration corrections, computed once per setup."""
    cached = setup._cache.get("correction")
    if cached is None:
        p = setup.extractor_params
        cached = setup._cache["correction"] = np.stack([integration_correction(
            r.reference_pulse_shape, r.reference_pulse_sample_width_ns, r.sampling_rate_ghz,
            p["window_width"], p["window_shift"]) for r in setup.readouts])
    return cached


def _extract(wf, gain, broken, setup: CameraSetup, readout, **override):
    params = {**setup.extractor_params, **override}
    return extract(setup.extractor, wf, gain, sampling_rate_ghz=float(readout.sampling_rate_ghz),
                   neighbor_indptr=setup.neighbor_indptr, neighbor_indices=setup.neighbor_indices,
                   reference_pulse_shape=np.ascontiguousarray(readout.reference_pulse_shape, np.float64),
                   reference_pulse_sample_width_ns=float(readout.reference_pulse_sample_width_ns),
                   broken_pixels=broken if broken.any() else None, pix_x=setup.pix_x_m, pix_y=setup.pix_y_m,
                   **params)


@dataclass(frozen=True)
class WaveformStream:
    """The waveforms of an R1 batch handed over block by block instead of as a column.

    ``feed(consume)`` calls ``consume(first_row, block)`` for consecutive blocks, each
    ``(rows, list_size)`` float32 (``list_size`` = n_pixels * n_samples), that cover
    every row of the batch in order; a block's buffer may be reused once ``consume``
    returns. The runner streams the waveforms from the R1 file this way, so that each
    block is extracted while it is still in the CPU caches.
    """

    list_size: int
    feed: Callable[[Callable[[int, np.ndarray], None]], None]


def table_waveforms(table: pa.Table) -> WaveformStream:
    """The batch's own waveform column as a :class:`WaveformStream` of one block."""
    list_size = table.schema.field(S.WAVEFORM).type.list_size

    def feed(consume):
        if table.num_rows:
            consume(0, _fixed(table, S.WAVEFORM, np.float32, list_size))

    return WaveformStream(list_size, feed)


def calibrate(table: pa.Table, setup: CameraSetup,
              waveforms: WaveformStream | None = None) -> tuple[np.ndarray, np.ndarray]:
    """R1 waveforms → (image p.e., peak time ns), each ``(n_events, n_pixels)`` float32.

    Follows ``CameraCalibrator._calibrate_dl1``: extraction (sum-only cameras take the
    single sample and a zero peak time), subtraction of the per-pixel time shift, then
    the invalid-pixel handler on HV-disabled pixels. The waveforms come from
    ``waveforms`` if given (the table then needs no waveform column), else from the
    table; the result is the same.
    """
    cfg = setup.config
    n, npix = table.num_rows, setup.n_pixels
    if waveforms is None:
        waveforms = table_waveforms(table)
    n_samples = max(waveforms.list_size // npix, 1) if n else 1
    gain = _fixed(table, S.SELECTED_GAIN, np.int8, npix)
    broken = _fixed(table, S.HV_DISABLED, np.bool_, npix)
    image = np.empty((n, npix), np.float32)
    peak_time = np.zeros((n, npix), np.float32) if n_samples == 1 else np.empty((n, npix), np.float32)
    extract_rows = None if n_samples == 1 else _row_extractor(table, setup, gain, broken)
    fed = 0

    def consume(first: int, block: np.ndarray) -> None:
        nonlocal fed
        if block.shape[1] != npix * n_samples:
            raise ValueError(f"waveforms of {block.shape[1]} values do not fit {npix} pixels")
        if first != fed or first + len(block) > n:
            raise ValueError(f"waveform block of rows {first}..{first + len(block)} does not follow row {fed}")
        stop = first + len(block)
        wf = block.reshape(len(block), npix, n_samples)
        if extract_rows is None:
            image[first:stop] = wf[:, :, 0]
        else:
            image[first:stop], peak_time[first:stop] = extract_rows(first, stop, wf)
        fed = stop

    waveforms.feed(consume)
    if fed != n:
        raise ValueError(f"{fed} rows of waveforms for a batch of {n}")
    if n_samples > 1 and cfg.apply_peak_time_shift:
        correct_and_shift(image, peak_time, gain, time_shift=_fixed(table, S.TIME_SHIFT, np.float32, npix))
    if cfg.invalid_pixel_handler == "NeighborAverage" and broken.any():
        image, peak_time = neighbor_average(image, peak_time, broken, setup.neighbor_indptr, setup.neighbor_indices)
    return image, peak_time


def _row_extractor(table: pa.Table, setup: CameraSetup, gain: np.ndarray, broken: np.ndarray):
    """``f(start, stop, wf)`` → (charge, peak time) of rows ``[start, stop)`` of the batch
    from their waveforms ``wf`` ``(stop - start, n_pixels, n_samples)``, with the readout
    (sampling rate, reference pulse) of each row's telescope."""
    tel_ids = table.column(S.TEL_ID).to_numpy()
    try:
        per_row = np.array([setup.readout_of_tel[int(t)] for t in tel_ids], np.int64)
    except KeyError as e:
        raise InputError(setup.tel_type, f"telescope {e.args[0]} is not of this type in the instrument") from None
    variants = np.unique(per_row)
    if len(variants) <= 1:
        readout = setup.readouts[int(variants[0]) if len(variants) else 0]
        return lambda a, b, wf: _extract(wf, gain[a:b], broken[a:b], setup, readout)
    if _per_event_correction_possible(setup):
        # one kernel call without the correction, then each telescope's own factor:
        # float32(float64(sum) * correction[gain]) is what the kernel itself computes
        def corrected(a, b, wf):
            image, peak_time = _extract(wf, gain[a:b], broken[a:b], setup, setup.readouts[0],
                                        apply_integration_correction=False)
            correct_and_shift(image, peak_time, gain[a:b], per_row[a:b], _correction_table(setup))
            return image, peak_time
        return corrected

    def per_variant(a, b, wf):
        # ctapipe corrects each telescope with its own reference pulse
        image = np.empty(wf.shape[:2], np.float32)
        peak_time = np.empty(wf.shape[:2], np.float32)
        rows_v = per_row[a:b]
        for v in np.unique(rows_v):
            rows = np.flatnonzero(rows_v == v)
            image[rows], peak_time[rows] = _extract(np.ascontiguousarray(wf[rows]), gain[a:b][rows],
                                                    broken[a:b][rows], setup, setup.readouts[int(v)])
        return image, peak_time
    return per_variant


def parameterize(image: np.ndarray, peak_time: np.ndarray, mask: np.ndarray, setup: CameraSetup) -> dict:
    """All image parameters (dvp column name → ``(n_events,)`` array) plus ``is_valid``."""
    n = image.shape[0]
    valid = setup.config.image_quality.evaluate(image_summary(image, mask), n)
    x, y = setup.pix_x_deg, setup.pix_y_deg
    hillas = hillas_parameters(x, y, image, mask, selected=valid, pix_area=setup.pix_area_deg2)
    labels, n_islands = label_islands(mask, setup.neighbor_indptr, setup.neighbor_indices)
    groups = {
        "hillas": hillas,
        "leakage": leakage_parameters(image, mask, setup.border_1, setup.border_2, selected=valid),
        "concentration": concentration_parameters(x, y, setup.pixel_width_deg, image, mask, hillas, selected=valid),
        "timing": timing_parameters(x, y, image, peak_time, mask, hillas, selected=valid,
                                    seed=setup.config.timing_seed),
        "morphology": morphology_parameters(labels, n_islands, selected=valid),
        "intensity_statistics": descriptive_statistics(image, mask, selected=valid),
        "peak_time_statistics": descriptive_statistics(peak_time, mask, selected=valid),
    }
    out = {S.IS_VALID: valid}
    for group, columns in S.DL1_PARAMETER_GROUPS.items():
        values = groups[group]
        for key, column in columns.items():
            v = np.asarray(values[key])
            if group == "morphology":
                v = np.where(valid, v, -1).astype(np.int32)
            out[column] = v
    return out


def r1_to_dl1(table: pa.Table, setup: CameraSetup, write_images: bool | None = None,
              waveforms: WaveformStream | None = None) -> pa.Table:
    """One R1 batch of ``setup.tel_type`` → its ``dl1.telescope_events`` table.

    Parameters
    ----------
    table : pyarrow.Table
        ``r1.telescope_events`` rows of one camera type (at least the columns
        :data:`R1_INPUT_COLUMNS`).
    setup : CameraSetup
        From :func:`prepare_camera`.
    write_images : bool, optional
        Add ``image``, ``peak_time`` and ``image_mask`` columns; default from the config.
    waveforms : WaveformStream, optional
        The batch's waveforms block by block (then ``table`` needs no waveform column);
        default: the table's waveform column.
    """
    if write_images is None:
        write_images = setup.config.write_images
    npix = setup.n_pixels
    image, peak_time = calibrate(table, setup, waveforms)
    mask = clean(setup.cleaner, image, peak_time, setup.neighbor_indptr, setup.neighbor_indices,
                 **setup.cleaner_params)
    params = parameterize(image, peak_time, mask, setup)
    cols = {S.OBS_ID: table.column(S.OBS_ID), S.EVENT_ID: table.column(S.EVENT_ID), S.TEL_ID: table.column(S.TEL_ID),
            S.POINTING_ALT: table.column(S.POINTING_ALT), S.POINTING_AZ: table.column(S.POINTING_AZ),
            S.IMAGE_SUM: image.sum(axis=1, dtype=np.float64),
            S.TRUE_IMAGE_SUM: table.column(S.TRUE_IMAGE_SUM), S.TRUE_IMPACT: table.column(S.TRUE_IMPACT)}
    cols.update(params)
    if write_images:
        cols[S.IMAGE] = pa.FixedSizeListArray.from_arrays(pa.array(image.reshape(-1)), npix)
        cols[S.PEAK_TIME] = pa.FixedSizeListArray.from_arrays(pa.array(peak_time.reshape(-1)), npix)
        cols[S.IMAGE_MASK] = pa.FixedSizeListArray.from_arrays(pa.array(mask.reshape(-1)), npix)
    names = [c for c in S.column_names(S.DL1_EVENTS, optional=True) if c in cols]
    return S.validate(pa.table({c: cols[c] for c in names}), S.DL1_EVENTS, source=setup.tel_type)
