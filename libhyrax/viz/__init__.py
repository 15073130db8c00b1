"""Helpers of the `visualize` stage: cutout thumbnails and the bokeh page (both import their heavy
libraries inside the functions)."""
