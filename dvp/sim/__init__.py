"""Toy air-shower Monte Carlo for ``dvp simulate`` (see :mod:`dvp.sim.showers`, :mod:`dvp.sim.camera`).

A *toy*: parametrised showers, Gaussian emission regions and a simple camera
response, meant for end-to-end tests and sanity checks of the pipeline, not physics.
"""
