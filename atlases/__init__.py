"""What is kept on disk and how: the neuron atlas format and its HTML report."""

from .neuron_atlas import FORMAT, FORMAT_VERSION, Atlas, load_atlas

__all__ = ["FORMAT", "FORMAT_VERSION", "Atlas", "load_atlas"]
