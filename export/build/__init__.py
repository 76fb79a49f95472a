"""Building the SavedModel: the encoder (and its heads) in raw TF ops, the preprocessing model on
TF Text ops, and the writer of the versioned, atomically published directory.

Nothing here imports `export.verify`: the verifiers stay independent of what they check.
"""
