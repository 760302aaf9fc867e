"""R0 → R1 calibration: pedestal subtraction, dc→p.e. and threshold gain selection.

Reproduces ctapipe 0.28's ``apply_simtel_r1_calibration`` with the
``ThresholdGainSelector`` bit for bit: all arithmetic in float32, as numpy does there.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _calibrate_select(adc, pedestal, dc_to_pe, threshold, select_gain, out, gain_out):
    n_channels, n_pixels, n_samples = adc.shape
    for p in range(n_pixels):
        g = 0
        if select_gain and n_channels > 1:
            for s in range(n_samples):
                if adc[0, p, s] > threshold:
                    g = 1
                    break
        gain_out[p] = g
        ped = pedestal[g, p]
        fac = dc_to_pe[g, p]
        for s in range(n_samples):
            out[p, s] = (adc[g, p, s] - ped) * fac


def calibrate_r1(adc, pedestal, dc_to_pe, threshold=4000.0, select_gain=True, out=None):
    """Calibrate and gain-select one telescope event.

    Parameters
    ----------
    adc : ndarray, shape (n_channels, n_pixels, n_samples), unsigned int
        R0 samples (ADC counts; uint32 sums for cameras that store only sums).
    pedestal : ndarray, shape (n_channels, n_pixels), float32
        Pedestal per sample (ADC counts).
    dc_to_pe : ndarray, shape (n_channels, n_pixels), float32
        Conversion factor ADC counts → p.e.
    threshold : float
        A pixel whose high-gain samples exceed this (ADC counts) uses the low gain.
    select_gain : bool
        If False, channel 0 is kept for all pixels.
    out : ndarray, shape (n_pixels, n_samples), float32, optional
        Where to write the waveform (e.g. a row of a batch buffer).

    Returns
    -------
    waveform : ndarray, shape (n_pixels, n_samples), float32, p.e. per sample
    selected_gain_channel : ndarray, shape (n_pixels,), int8
    """
    if adc.ndim != 3 or adc.dtype.kind not in "ui":
        raise ValueError(f"adc must be (n_channels, n_pixels, n_samples), got {adc.dtype} {adc.shape}")
    n_channels, n_pixels, n_samples = adc.shape
    if pedestal.shape != (n_channels, n_pixels) or dc_to_pe.shape != (n_channels, n_pixels):
        raise ValueError(f"pedestal {pedestal.shape} / dc_to_pe {dc_to_pe.shape} do not match adc {adc.shape}")
    if out is None:
        out = np.empty((n_pixels, n_samples), np.float32)
    elif out.shape != (n_pixels, n_samples) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 {(n_pixels, n_samples)}, got {out.dtype} {out.shape}")
    gain = np.empty(n_pixels, np.int8)
    # numpy (hence ctapipe) computes uint16 samples in float32 and the uint32 sums of
    # sum-only cameras in float64; numba's scalar promotion differs, so convert up front
    # (exactly: both integer types fit the mantissa) and run the kernel in that type
    ftype = np.result_type(adc.dtype, np.float32)
    _calibrate_select(np.ascontiguousarray(adc, ftype), np.ascontiguousarray(pedestal, ftype),
                      np.ascontiguousarray(dc_to_pe, ftype), float(threshold), bool(select_gain), out, gain)
    return out, gain
