"""Data: featurizers and generated or loaded data sets that become graphs / token batches.

* :mod:`graphattn.data.algorithmic`: copy, reverse, sort, addition and copy-with-unknown-words
  sequence-to-sequence tasks, generated on the fly.

Submodules are imported on use (``from graphattn.data import algorithmic``).
"""
