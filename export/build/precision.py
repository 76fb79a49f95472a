"""The arithmetic an export computes in: float32 throughout, or bfloat16 matmuls around float32.

With bfloat16, the matmul weights (kernels and embedding tables) are stored as bfloat16
variables, halving the artifact, and every matmul multiplies bfloat16 operands (oneDNN
accumulates in float32 and runs them on AMX / AVX512-BF16 where the CPU has them). What is left
in float32: the residual stream and its sums, LayerNorm statistics and parameters, biases, the
attention scores' scaling, mask and softmax, and the activations (GELU, tanh). A float32 export's
graph is the same as without this module.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from export.build.dtypes import BFLOAT16, FLOAT32


def is_matmul_weight(canonical_name: str) -> bool:
    """Kernels and embedding tables (not biases, LayerNorm parameters or output biases)."""
    return canonical_name.endswith("/kernel") or (canonical_name.startswith("embeddings/")
                                                  and "/ln/" not in canonical_name)


@dataclasses.dataclass(frozen=True)
class Precision:
    dtype: str = FLOAT32

    @property
    def fine_tunable(self) -> bool:
        """bfloat16 weights are for serving: their variables are not trainable."""
        return self.dtype == FLOAT32

    def variables(self, names, read_weight: Callable[[str], np.ndarray]) -> list[tf.Variable]:
        """One tf.Variable per canonical name, read one tensor at a time (the reader's array is
        released once the variable holds it); matmul weights in this precision."""
        made = []
        for name in names:
            array = read_weight(name)
            if self.dtype == BFLOAT16 and is_matmul_weight(name):
                array = array.astype(tf.bfloat16.as_numpy_dtype)
            made.append(tf.Variable(array, trainable=self.fine_tunable, name=name.replace("/", "_")))
        return made

    def matmul(self, a: tf.Tensor, b: tf.Tensor, transpose_b: bool = False) -> tf.Tensor:
        """float32 in and out; in bfloat16 the product of bfloat16 operands."""
        if self.dtype == FLOAT32:
            return tf.matmul(a, b, transpose_b=transpose_b)
        return tf.cast(tf.matmul(_bf16(a), _bf16(b), transpose_b=transpose_b), tf.float32)

    def embed(self, table: tf.Variable | tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
        """Rows of an embedding table, as float32."""
        rows = tf.gather(table, ids)
        return rows if self.dtype == FLOAT32 else tf.cast(rows, tf.float32)

    def as_float32(self, t: tf.Tensor) -> tf.Tensor:
        return t if t.dtype == tf.float32 else tf.cast(t, tf.float32)


def _bf16(t: tf.Tensor) -> tf.Tensor:
    return t if t.dtype == tf.bfloat16 else tf.cast(t, tf.bfloat16)
