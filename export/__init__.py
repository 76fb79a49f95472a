"""bert-export: turn a trained BERT checkpoint into a versioned, verified TF Hub SavedModel.

The package reads as the pipeline it implements:
config -> checkpoints (readers) -> model (builder) -> writer -> verify -> report,
tied together by `pipeline.run_export` and driven by the `cli` module.
"""

__version__ = "0.1.0"
