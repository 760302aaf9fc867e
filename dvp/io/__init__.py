"""Readers and writers: sim_telarray (eventio) input, Parquet product directories."""
