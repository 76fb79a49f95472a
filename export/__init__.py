"""bert-export: turn a trained BERT checkpoint into a versioned, verified TF Hub SavedModel.

The package is laid out as the pipeline it implements, one folder a stage, imports pointing one way:
cli/ -> pipeline -> build/, verify/, publish/ -> checkpoints/ -> weights, config, vocab -> errors, report
(tests/test_layout.py holds the direction).
"""

__version__ = "0.1.0"
