"""Loading the sensor: feature probes, the event catalogue, and the BPF lifecycle."""
