"""Spiking network description, backends (loihi, float), learning, core mapping."""
