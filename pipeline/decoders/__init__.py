"""Output spikes -> commands, and the BCI decoders."""
