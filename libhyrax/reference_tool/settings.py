"""The reference Hyrax's settings and names, mapped: which of its config keys the facade honours, and what
to use instead of the ones this Hyrax doesn't have.

The config loader (libhyrax.config) migrates a reference config file and returns the reference keys it
left out; the facade (facade.py) honours the run-naming ones below and says what to do about the rest.
"""

from __future__ import annotations

# the reference's settings that name a run to read, by the verb that reads them (the config itself has
# no such keys here: the facade holds them)
RUN_KEYS = {
    "umap": "results.inference_dir", "lookup": "results.inference_dir", "index": "vector_db.infer_results_dir",
    "export": "onnx.input_model_directory", "engine": "engine.model_directory",
    "database_connection": "vector_db.vector_db_dir",
}
# the reference's verb arguments that name a run to read
RUN_ARGS = {"umap": "input_dir", "visualize": "input_dir", "index": "input_dir", "export": "input_model_directory",
            "engine": "model_directory", "database_connection": "database_dir", "lookup": "results_dir"}

# the reference's verbs this Hyrax doesn't have, and what to use instead
UNSUPPORTED = {
    "rebuild_manifest": "h.prepare() reads a download folder's manifest.fits as it is and lists failed downloads "
                        "in rejected.csv",
    "infer_stream": "streams are not supported: write the objects to files and use h.prepare() and h.infer()",
    "train_stream": "streams are not supported: write the objects to files and use h.prepare() and h.train()",
    "visualize_v2": "use h.visualize(): an interactive map with cutouts, inline and as visualize.html",
    "create_splits": "h.train() makes the splits from [split] and keeps them in the train run (split.h5); reuse "
                     "them with split.from_run",
    "raw_data_dimensions": "the cutouts are prepare.cutout_size square; libhyrax.open_group(h.config, "
                           "'train').sample_shape is the model's input shape",
    "vdb_index": "use h.save_to_database() and h.database_connection()",
}

# reference settings that live elsewhere here: what a plugin (or a config) that sets them should use instead
INSTEAD = {
    "data_set.filters": "the band order is prepare.bands (or the dataset's own option)",
    "data_set.use_cache": "there is no cache setting: data are read in contiguous batches",
    "data_set.filter_catalog": "give the dataset a catalog of the objects to read",
    "train.weights_filename": "a train run's weights are its model.pt",
    "general.dev_mode": "there is no dev mode",
}
