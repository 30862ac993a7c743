"""cleanmarl: single-file QMIX implementations and one small multi-agent env API."""

__version__ = "0.1.0"
