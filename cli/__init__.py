"""The `hyrax` command line: thin Typer wrappers over libhyrax's stage functions, one module per stage.

Import-light on purpose: `hyrax --help` must not import torch, mlflow, chromadb, umap, bokeh or astropy.
"""
