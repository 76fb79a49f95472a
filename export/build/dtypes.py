"""The arithmetic an export can compute in, by name (export/build/precision.py implements them).

Free of TensorFlow, so that the command line is checked, and refused, before TensorFlow loads.
"""

FLOAT32, BFLOAT16 = "float32", "bfloat16"
DTYPES = (FLOAT32, BFLOAT16)
