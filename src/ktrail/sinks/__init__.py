"""Where events go: one small interface, so a new destination (a fleet
shipper, metrics, syslog) plugs in without touching the pipeline."""
