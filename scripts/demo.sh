#!/usr/bin/env bash
# The demo: the whole pipeline on the built-in sample (real galaxies from the Hubble eXtreme Deep Field),
# with no config file at all. `make demo` runs it inside ./demo. Logs go to stderr; each stage prints
# only its results directory on stdout, so the stages chain with pipes.
set -euo pipefail
exec </dev/null  # stages not in a pipe read no stdin (an empty pipe means "upstream failed")

step() { printf '\n== %s\n' "$*" >&2; }

step "train the default autoencoder, embed every object, map the latent space, draw the map"
html_run=$(hyrax train | hyrax infer | hyrax umap | hyrax visualize)

step "evaluate the trained model on its test split"
hyrax test >/dev/null

step "export the model to ONNX (checked against torch)"
hyrax export >/dev/null

step "index the latents and find the neighbours of one galaxy"
hyrax index >/dev/null
hyrax search --id HDF-0001 -k 5 --show >/dev/null

step "rank every object by how unusual it is"
hyrax anomaly --show >/dev/null

step "done"
echo "interactive map: $(ls "$html_run"/*.html)" >&2
echo "results: $(pwd)/results" >&2
