"""Numba kernels on flat numpy arrays. No Arrow, astropy or Python objects in here."""
