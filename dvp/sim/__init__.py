"""Toy air-shower Monte Carlo for ``dvp simulate``.

- :mod:`dvp.sim.showers`: primaries (gamma, electron, proton), energies, directions,
  cores and shower maxima;
- :mod:`dvp.sim.camera`: Gaussian emission model, projection into cameras, Poisson
  images, waveform synthesis (NSB + noise from a simulated noise trace);
- :mod:`dvp.sim.muons`: single muons hitting one telescope, rings after Vacanti et al.;
- :mod:`dvp.sim.events`: the event loop, trigger and R1 batches;
- :mod:`dvp.sim.figures`: the figure set (``make sim-figures``).

A *toy*: parametrised showers, Gaussian emission regions and a simple camera
response, meant for end-to-end tests, sanity checks and throughput studies of the
pipeline, not physics.
"""
