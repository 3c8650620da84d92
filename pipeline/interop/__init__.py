"""Models from the field: lava-dl netx (.net) and NIR (.nir) files to and from spikeloop networks.

Engine layer: builds :class:`pipeline.snn.Network` descriptions; pipeline.snn never imports it.
"""
