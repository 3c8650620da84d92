"""Everything that touches hardware, or emulates it byte for byte."""
