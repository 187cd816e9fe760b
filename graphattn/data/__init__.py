"""Data: featurizers and generated or loaded data sets that become graphs / token batches.

* :mod:`graphattn.data.algorithmic`: copy, reverse, sort, addition and copy-with-unknown-words
  sequence-to-sequence tasks, generated on the fly.
* :mod:`graphattn.data.molecule`: SMILES / RDKit molecules -> PyG ``Data`` with the OGB features
  (reproducing OGB's own output) or the benchmarking-gnns ZINC atom/bond types; Gasteiger charges.
* :mod:`graphattn.data.molecule_datasets`: molecule CSVs (ESOL, FreeSolv, Lipophilicity, BACE,
  BBBP, HIV, ZINC-12k, RDKit's NCI/TPSA set), random / OGB scaffold / index-file splits, caching.
* :mod:`graphattn.data.text`: CoNLL-U reading (errors with file and line), word vocabularies with
  unknown-word shape classes, padding to ``[B, L]``, UD English-EWT part-of-speech data.
* :mod:`graphattn.data.speech`: WAV reading, frames (25 ms / 10 ms), log-mel filterbanks, MFCC,
  deltas, CMVN (numpy / scipy), the Free Spoken Digit Dataset with character targets.
* :mod:`graphattn.data.image`: pixels (all channels) as nodes in the 2-D patterns' order,
  patches, image patterns by name, scikit-learn's digits with a stratified held-out split.
* :mod:`graphattn.data.lra`: Long-Range-Arena-style classification tasks generated offline --
  ListOps, byte-level genre classification of UD English-EWT documents, Pathfinder 32x32 and
  pixel-sequence shapes (or scikit-learn's digits) -- with padding collate.
* :mod:`graphattn.data.geometry`: planar point sets uniform in the unit square with exact answers
  for pointer networks -- convex hulls (scipy), optimal TSP tours (Held-Karp), Delaunay
  triangles -- the pointer convention (0 = END, point i = i + 1), padding collate, and the
  metrics of Vinyals et al. (exact accuracy, hull area coverage, tour length, invalid outputs).

Submodules are imported on use (``from graphattn.data import algorithmic``).
"""
