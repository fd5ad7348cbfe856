"""The event pipeline: enrichment of decoded records, filters, and the run loop."""
