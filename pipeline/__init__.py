"""spikeloop core: what happens to events between sensor and actuator."""
