"""Data: featurizers and generated or loaded data sets that become graphs / token batches.

* :mod:`graphattn.data.algorithmic`: copy, reverse, sort, addition and copy-with-unknown-words
  sequence-to-sequence tasks, generated on the fly.
* :mod:`graphattn.data.molecule`: SMILES / RDKit molecules -> PyG ``Data`` with the OGB features
  (reproducing OGB's own output) or the benchmarking-gnns ZINC atom/bond types; Gasteiger charges.
* :mod:`graphattn.data.molecule_datasets`: molecule CSVs (ESOL, FreeSolv, Lipophilicity, BACE,
  BBBP, HIV, ZINC-12k, RDKit's NCI/TPSA set), random / OGB scaffold / index-file splits, caching.

Submodules are imported on use (``from graphattn.data import algorithmic``).
"""
