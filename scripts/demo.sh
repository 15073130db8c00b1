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
anomaly_run=$(hyrax anomaly --show)

step "one labelling round: a stand-in for a person, after the reddest objects, labels the top 20 anomalies"
# (a person does this in the map: select, press 0..5, "Save labels (CSV)"); a label file is object_id,label
python - "$anomaly_run/top_anomalies.csv" >labels.csv <<'PY'
import csv
import sys

top = list(csv.DictReader(open(sys.argv[1])))[:20]
red = sorted(float(row["color_rb"]) for row in top)[len(top) // 2]
print("object_id,label")
for row in top:
    print(f"{row['object_id']},{5 if float(row['color_rb']) >= red else 0}")
PY
hyrax rank --labels labels.csv --show >/dev/null
labelled_map=$(hyrax visualize)  # coloured by the new ranking, starting with these labels

step "done"
echo "interactive map: $(ls "$html_run"/*.html)" >&2
echo "after one labelling round: $(ls "$labelled_map"/*.html) (labels: $(pwd)/labels.csv)" >&2
echo "results: $(pwd)/results" >&2
