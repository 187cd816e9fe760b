"""Training loop for any model and loss: fit, evaluate, checkpoints, exact resume, early stopping, DDP.

:func:`fit` trains ``model`` on a map-style dataset (anything with ``len`` and integer indexing)
with a loss function ``loss_fn(model, batch, state) -> loss`` (or ``(loss, {name: value})`` for
extra logged values), one :class:`TrainConfig` passed whole:

* **Batches.** ``TrainConfig.batch_size`` is the *global* batch of one forward pass. Each epoch
  draws a seeded permutation (``seed``, ``epoch``) and cuts it into global batches; one optimizer
  step consumes ``grad_accumulation`` consecutive global batches (groups do not span epochs: the
  last group of an epoch may be shorter). With ``W`` processes, rank ``r`` takes the contiguous
  ``r``-th ``1/W`` of every global batch, so the gradient DDP averages is the single-process
  gradient whenever ``loss_fn`` returns a mean over equally weighted samples. (A token-level
  mean, such as :func:`sequence_cross_entropy`, is averaged per rank and then over ranks: close
  to, not equal to, the single-process value when ranks hold different token counts.)
* **Schedules.** ``"constant"``, ``"linear"``, ``"cosine"`` and ``"inverse_sqrt"`` (Vaswani et al.
  2017) with linear warm-up, as a ``LambdaLR`` over optimizer steps (:func:`make_scheduler`).
* **Validation, best model, early stopping.** Training runs in train mode (:func:`fit` calls
  ``model.train()``). Every ``eval_every`` steps (default: at each epoch
  end) and at the end, ``evaluate_fn(model, val_data)`` (default: the mean ``loss_fn`` over
  ``val_data``, :func:`evaluate`) returns metrics; ``monitor``/``mode`` choose the best,
  written to ``out_dir/best.pt``; ``patience`` validations without improvement stop training.
* **Files in out_dir.** ``checkpoint.pt`` (everything needed to resume: model, optimizer,
  scheduler, data position, best metric, patience counter, RNG states, callback states
  (:meth:`Callback.state_dict`), the config), ``best.pt``
  (the best model), ``metrics.jsonl`` (one JSON object per log or validation event). Files are
  written atomically (temporary file in the same folder, fsync, ``os.replace``) and load with
  ``torch.load(..., weights_only=True)``.
* **Exact resume.** With ``resume=True`` and an ``out_dir/checkpoint.pt``, :func:`fit` continues
  where the checkpoint stopped: the epoch permutation is recomputed and the batches already
  consumed are skipped, RNG states are restored, so the continued run reproduces the
  uninterrupted one bit for bit on CPU (with ``num_workers=0``; worker processes draw their own
  random streams). Any exception during training (``KeyboardInterrupt`` included) first writes
  a checkpoint of the last completed optimizer step, then propagates. Validation runs with the
  RNG states saved and restored around it, so evaluating does not change the training run.

Multi-process data parallel training (``torch.distributed``): write an ordinary script that
calls :func:`fit` and launch it with ``torchrun``::

    torchrun --nproc_per_node 4 train_my_model.py        # one machine, 4 processes (GPUs)

:func:`fit` reads ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT`` and
initializes the process group (:func:`init_distributed`; ``nccl`` with CUDA, else ``gloo``),
or uses a group you initialized. It wraps the model in ``DistributedDataParallel`` (pass a
``DistributedDataParallel`` yourself to choose its options), places rank ``r`` on
``cuda:LOCAL_RANK``, averages the logged losses over ranks, and validates and writes files on
rank 0 only. ``loss_fn`` receives the wrapped model: use :func:`unwrap_model` to reach its
attributes. Call :func:`cleanup_distributed` at the end of the script. Exact resume holds per
rank: each rank ``r > 0`` stores its RNG states in ``out_dir/checkpoint.rank{r}.pt``.

Sequence-to-sequence helpers: :func:`sequence_cross_entropy` (padding-aware, label smoothing),
:class:`Seq2SeqLoss` (teacher forcing on :class:`Seq2SeqBatch`, optional
:class:`ScheduledSampling`), :class:`Seq2SeqCollator` (pads pairs into a batch) and
:func:`corpus_bleu` (sacreBLEU).

Modules, in the order of dependency (each imports only modules above it; every public name is
re-exported here, and ``__all__`` is the public API; modules starting with ``_`` are private):

==============  ====================================================================================
``_common``     argument checks shared by the modules
``config``      :class:`TrainConfig`, :class:`TrainState`, :class:`FitResult`, :class:`Callback`,
                :data:`SCHEDULES`, :data:`OPTIMIZERS`
``schedules``   :func:`lr_multiplier`, :func:`make_scheduler`, :func:`make_optimizer`, :class:`BudgetCosine`
``devices``     :func:`move_to_device`, :func:`unwrap_model`
``distributed`` :class:`DistributedInfo`, :func:`init_distributed`, :func:`cleanup_distributed`,
                :func:`find_free_port`
``_rng``        the global RNG states: capture, restore, seed, a ``weights_only``-loadable form
``_batching``   the data order: batches per epoch, seeded epoch permutations, each rank's share
``checkpoint``  the files in ``out_dir`` (atomic writes), :class:`CheckpointInfo`,
                :func:`load_checkpoint`
``evaluation``  :func:`evaluate`, the default validation
``loop``        :func:`fit` and the bookkeeping of one run
``buckets``     :class:`LengthBuckets`, training batches of similar lengths
``seq2seq``     :class:`Seq2SeqBatch`, :class:`Seq2SeqCollator`, :func:`sequence_cross_entropy`,
                :class:`ScheduledSampling`, :class:`Seq2SeqLoss`, :func:`corpus_bleu`
``sequence_level`` :class:`SequenceLevelLoss` (REINFORCE on a sentence-level reward), :class:`MixerSchedule`,
                :func:`sentence_bleu_reward`, :func:`greedy_decode`, :func:`validation_bleu`
==============  ====================================================================================

Example:
    >>> import torch
    >>> from torch import nn
    >>> from graphattn.train import TrainConfig, fit
    >>> data = [(torch.randn(3), torch.randn(1)) for _ in range(32)]
    >>> model = nn.Linear(3, 1)
    >>> def mse(model, batch, state):
    ...     x, y = batch
    ...     return nn.functional.mse_loss(model(x), y)
    >>> config = TrainConfig(epochs=2, batch_size=8, lr=0.05, progress=False, device="cpu")
    >>> result = fit(model, data, loss_fn=mse, config=config, val_data=data[:8])
    >>> result.steps, result.epochs_completed, sorted(result.history[-1])
    (8, 2.0, ['elapsed', 'epoch', 'event', 'lr', 'step', 'val_loss'])
"""
from __future__ import annotations

from graphattn.train.checkpoint import BEST_NAME, CHECKPOINT_NAME, METRICS_NAME  # file names, not in __all__
from graphattn.train.buckets import LengthBuckets
from graphattn.train.checkpoint import CheckpointInfo, load_checkpoint
from graphattn.train.config import OPTIMIZERS, SCHEDULES, Callback, FitResult, TrainConfig, TrainState
from graphattn.train.devices import move_to_device, unwrap_model
from graphattn.train.distributed import DistributedInfo, cleanup_distributed, find_free_port, init_distributed
from graphattn.train.evaluation import evaluate
from graphattn.train.loop import fit
from graphattn.train.schedules import BudgetCosine, lr_multiplier, make_optimizer, make_scheduler
from graphattn.train.seq2seq import (
    SCHEDULED_SAMPLING_SCHEDULES,
    ScheduledSampling,
    Seq2SeqBatch,
    Seq2SeqCollator,
    Seq2SeqLoss,
    corpus_bleu,
    sequence_cross_entropy,
)
from graphattn.train.sequence_level import (
    BASELINES,
    MixerSchedule,
    SequenceLevelLoss,
    greedy_decode,
    sentence_bleu_reward,
    validation_bleu,
)

__all__ = [
    # training
    "TrainConfig",
    "TrainState",
    "FitResult",
    "Callback",
    "fit",
    "evaluate",
    "LengthBuckets",
    # schedules and optimizers
    "SCHEDULES",
    "OPTIMIZERS",
    "lr_multiplier",
    "make_scheduler",
    "BudgetCosine",
    "make_optimizer",
    # checkpoints
    "CheckpointInfo",
    "load_checkpoint",
    # devices and processes
    "move_to_device",
    "unwrap_model",
    "DistributedInfo",
    "init_distributed",
    "cleanup_distributed",
    "find_free_port",
    # sequence to sequence
    "Seq2SeqBatch",
    "Seq2SeqCollator",
    "sequence_cross_entropy",
    "ScheduledSampling",
    "SCHEDULED_SAMPLING_SCHEDULES",
    "Seq2SeqLoss",
    "corpus_bleu",
    # sequence-level training
    "SequenceLevelLoss",
    "MixerSchedule",
    "BASELINES",
    "sentence_bleu_reward",
    "greedy_decode",
    "validation_bleu",
]
