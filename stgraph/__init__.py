"""stgraph: spatial-temporal graph neural networks for video-based person re-identification."""

__version__ = "0.1.0"
