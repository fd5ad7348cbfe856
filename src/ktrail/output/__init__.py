"""Where events go: encoders (JSON lines, human text) and targets (stream, rotated file)."""
