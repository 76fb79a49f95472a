"""Publishing: the artifact of one exported version (reproducible tarball, SHA256SUMS, model card,
Kaggle Models metadata) and the safe extraction of a downloaded one.
"""
