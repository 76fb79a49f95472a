"""Verification: what a written SavedModel computes, checked in a fresh process against
independent references (a float64 numpy forward pass from the checkpoint's arrays; pure-Python
tokenizers and packer), plus the conformance checks `bert-verify` runs on a published artifact.

Nothing here imports `export.build`: a reference shares no code with the builder it checks.
"""
