"""The training loop: :func:`fit` and the bookkeeping of one run."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, default_collate

from graphattn.train._batching import RankBatches, check_dataset, epoch_order, epoch_seed, make_plan
from graphattn.train._rng import (
    RngSnapshot,
    capture_rng,
    preserved_rng,
    restore_rng,
    rng_from_payload,
    rng_to_payload,
    seed_everything,
)
from graphattn.train.checkpoint import (
    BEST_NAME,
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    METRICS_NAME,
    atomic_save,
    atomic_write_text,
    load_checkpoint,
    rank_file,
)
from graphattn.train.config import Callback, EvaluateFn, FitResult, LossFn, TrainConfig, TrainState
from graphattn.train.devices import move_to_device, unwrap_model
from graphattn.train.distributed import DistributedInfo, init_distributed
from graphattn.train.evaluation import evaluate, split_loss
from graphattn.train.schedules import make_optimizer, make_scheduler

__all__ = ["fit"]

logger = logging.getLogger("graphattn.train")

COPIED_BUFFER_LIMIT = 1 << 20
"""Model buffers up to this many elements are copied after every step, so that a checkpoint
written after an interruption holds their values of the last completed step."""


def fit(
    model: nn.Module,
    train_data: Any,
    *,
    loss_fn: LossFn,
    config: TrainConfig = TrainConfig(),
    collate_fn: Callable[[list], Any] | None = None,
    val_data: Any = None,
    evaluate_fn: EvaluateFn | None = None,
    out_dir: str | Path | None = None,
    resume: bool = True,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    callbacks: Sequence[Callback | Callable[[TrainState], Any]] = (),
) -> FitResult:
    """Train ``model`` on ``train_data``; see :mod:`graphattn.train` for the whole picture.

    Args:
        model: any ``nn.Module`` (moved to the training device in place). A
            ``DistributedDataParallel`` is used as given.
        train_data: a map-style dataset (``len`` and integer indexing).
        loss_fn: ``loss_fn(model, batch, state) -> loss`` or ``(loss, {name: value})``; the loss
            is a scalar tensor, the mean over the batch (gradients are averaged over
            accumulated batches and over processes); the extra values are logged as
            ``train_<name>`` (and ``val_<name>`` by the default evaluation).
        config: :class:`~graphattn.train.TrainConfig`.
        collate_fn: builds a batch from a list of samples (default ``default_collate``);
            batches are moved to the device with :func:`~graphattn.train.move_to_device`.
        val_data: validation dataset for the default evaluation, or what ``evaluate_fn`` receives.
        evaluate_fn: ``evaluate_fn(model, val_data) -> {metric: float}``, called with the
            unwrapped module in eval mode under ``torch.no_grad()`` (train mode is restored
            afterwards), on rank 0 only. Default: :func:`~graphattn.train.evaluate` with
            ``loss_fn``, giving ``val_loss``. Validation happens when ``val_data`` or
            ``evaluate_fn`` is given.
            (Multi-process runs wait for it at a collective: a validation longer than the
            process group's timeout needs a larger ``timeout`` in ``init_process_group``.)
        out_dir: folder for ``checkpoint.pt``, ``best.pt``, ``metrics.jsonl``; None = no files.
        resume: continue from ``out_dir/checkpoint.pt`` when it exists. A fresh run (no
            checkpoint, or ``resume=False``) first removes the files of an older run from
            ``out_dir`` (``checkpoint*.pt``, ``best.pt``, ``metrics.jsonl``).
        optimizer: default :func:`~graphattn.train.make_optimizer` from ``config``; a given
            optimizer keeps its own lr, which ``config.schedule`` then scales.
        scheduler: a step-based lr scheduler over ``optimizer`` stepped once per optimizer step;
            default :func:`~graphattn.train.make_scheduler` from ``config``.
        callbacks: :class:`~graphattn.train.Callback` objects or callables ``f(state)`` (after
            each step).

    Returns:
        :class:`~graphattn.train.FitResult`.

    Raises:
        Whatever training raised, after writing ``out_dir/checkpoint.pt`` at the last
        completed optimizer step (not if the exception interrupted the parameter update
        itself; then the previous checkpoint stays).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected model to be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"Expected config to be a TrainConfig, got {type(config).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"Expected loss_fn to be callable as loss_fn(model, batch, state), got {type(loss_fn).__name__}")
    num_samples = check_dataset(train_data, "train_data")
    has_validation = val_data is not None or evaluate_fn is not None
    if config.patience is not None and not has_validation:
        raise ValueError(
            f"patience={config.patience} needs validation; pass val_data (or evaluate_fn), or set patience=None"
        )
    cpu_only = config.device is not None and torch.device(config.device).type == "cpu"
    info = init_distributed(backend="gloo" if cpu_only else None)
    world_size = info.world_size
    if config.batch_size % world_size:
        raise ValueError(
            f"batch_size={config.batch_size} (the global batch) is not divisible by the world size {world_size}; "
            f"use a multiple of {world_size} such as {max(1, round(config.batch_size / world_size)) * world_size}"
        )
    run = _Run(
        model=model,
        config=config,
        info=info,
        train_data=train_data,
        num_samples=num_samples,
        loss_fn=loss_fn,
        collate_fn=collate_fn,
        val_data=val_data,
        evaluate_fn=evaluate_fn,
        has_validation=has_validation,
        out_dir=Path(out_dir) if out_dir is not None else None,
        optimizer=optimizer,
        scheduler=scheduler,
        callbacks=[c if isinstance(c, Callback) else _FunctionCallback(c) for c in callbacks],
    )
    return run.fit(resume)


class _FunctionCallback(Callback):
    def __init__(self, function: Callable[[TrainState], Any]) -> None:
        if not callable(function):
            raise TypeError(f"Expected a Callback or a callable f(state) in callbacks, got {type(function).__name__}")
        self.function = function

    def on_step_end(self, state: TrainState) -> None:
        self.function(state)


class _Run:
    """One call of :func:`fit`: the bookkeeping shared by its phases."""

    def __init__(self, *, model, config, info, train_data, num_samples, loss_fn, collate_fn, val_data,
                 evaluate_fn, has_validation, out_dir, optimizer, scheduler, callbacks) -> None:
        self.config: TrainConfig = config
        self.rank, self.world_size = info.rank, info.world_size
        self.is_main = self.rank == 0
        self.train_data, self.loss_fn, self.collate_fn = train_data, loss_fn, collate_fn
        self.val_data, self.evaluate_fn, self.has_validation = val_data, evaluate_fn, has_validation
        self.out_dir: Path | None = out_dir
        self.callbacks: list[Callback] = callbacks
        self.plan = make_plan(num_samples, config, self.world_size)

        self.module = unwrap_model(model)
        self.device = _resolve_device(config.device, self.module, info)
        self.module.to(self.device)
        self.model = model  # what loss_fn receives; wrapped in DDP below when needed
        self.optimizer = optimizer if optimizer is not None else make_optimizer(self.module.parameters(), config)
        self.scheduler = scheduler if scheduler is not None else make_scheduler(
            self.optimizer, config.schedule, warmup_steps=config.warmup_steps, total_steps=self.plan.total_steps
        )
        self.state = TrainState(
            batches_per_epoch=self.plan.batches_per_epoch,
            steps_per_epoch=self.plan.steps_per_epoch,
            total_steps=self.plan.total_steps,
            rank=self.rank,
            world_size=self.world_size,
            device=self.device,
            lr=self.optimizer.param_groups[0]["lr"],
        )
        self.bad_validations = 0
        self.last_validation_step: int | None = None
        self.stopped_early = False
        self.history: list[dict] = []
        self.running = _RunningMeans(self.device)
        self.elapsed_before = 0.0
        self.start_time = time.perf_counter()
        self.resumed_from: int | None = None
        self.snapshot: RngSnapshot | None = None  # RNG states right after the last completed step
        self.updating = False  # True between optimizer.step() and the end of the step's bookkeeping
        self.committed_batch = 0  # state.batch_in_epoch after the last completed step
        # buffers (e.g. BatchNorm statistics) as of the last completed step, and their identity and
        # version then: a step interrupted after its forward pass has already changed some of them
        self.committed_buffers: dict[str, Tensor] = {}
        self.buffer_versions: dict[str, tuple[int, int]] = {}  # of buffers too large to copy

    # ------------------------------------------------------------------ setup
    def fit(self, resume: bool) -> FitResult:
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = self.out_dir / CHECKPOINT_NAME if self.out_dir is not None else None
        if resume and checkpoint is not None and checkpoint.is_file():
            self._load(checkpoint)
        else:
            self._fresh_start()
        if self.world_size > 1 and not isinstance(self.model, nn.parallel.DistributedDataParallel):
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        self.snapshot = capture_rng()
        self.committed_batch = self.state.batch_in_epoch
        self._commit_buffers()
        self.optimizer.zero_grad(set_to_none=True)
        progress = _progress_bar(self.config, self.is_main, self.plan.total_steps, self.state.step)
        try:
            self._train(progress)
        except BaseException:
            progress.close()
            self._save_after_exception()
            raise
        progress.close()
        result = self._result()
        for callback in self.callbacks:
            callback.on_train_end(self.state, result)
        return result

    def _fresh_start(self) -> None:
        seed_everything(self.config.seed + self.rank)
        if self.out_dir is not None and self.is_main:
            for name in (CHECKPOINT_NAME, BEST_NAME, METRICS_NAME):  # files of an older run
                with contextlib.suppress(FileNotFoundError):
                    (self.out_dir / name).unlink()
        if self.out_dir is not None:
            with contextlib.suppress(FileNotFoundError):
                rank_file(self.out_dir, self.rank).unlink()

    def _load(self, path: Path) -> None:
        info = load_checkpoint(path, self.module, self.optimizer, self.scheduler, map_location="cpu")
        payload = info.payload
        if payload["kind"] != "checkpoint":
            raise ValueError(f"{path} is a {payload['kind']!r} file, not a resumable checkpoint")
        self._check_resumable(payload["config"], path)
        state = self.state
        state.step, state.epoch, state.batch_in_epoch = info.step, info.epoch, info.batch_in_epoch
        state.best_metric, state.best_step = info.best_metric, info.best_step
        state.metrics = dict(payload["metrics"])
        state.lr = self.optimizer.param_groups[0]["lr"]
        self.bad_validations = payload["bad_validations"]
        self.last_validation_step = payload["last_validation_step"]
        self.stopped_early = payload["stopped_early"]
        self.history = [dict(event) for event in payload["history"]]
        self.elapsed_before = payload["elapsed"]
        self.resumed_from = info.step
        self._load_callback_states(payload.get("callbacks"), path)
        rank_state = payload["rank_state"] if self.rank == 0 else self._load_rank_state(info.step)
        if rank_state is None:
            seed_everything(self.config.seed + self.rank + 7919 * info.step)
        else:
            restore_rng(rng_from_payload(rank_state["rng"]))
            self.running.load_state_dict(rank_state["running"])
        if self.is_main:  # drop events logged after the checkpoint (a run killed without a final checkpoint)
            atomic_write_text("".join(json.dumps(event) + "\n" for event in self.history), self.out_dir / METRICS_NAME)
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", path, info.step, info.epoch, info.batch_in_epoch)

    def _load_callback_states(self, states: list[Any] | None, path: Path) -> None:
        wanted = [callback.state_dict() is not None for callback in self.callbacks]
        if states is None:  # a checkpoint of an older graphattn
            if any(wanted):
                warnings.warn(f"{path} holds no callback states (an older checkpoint); the callbacks start afresh")
            return
        saved = [state is not None for state in states]
        if any(saved) or any(wanted):
            if saved != wanted:
                raise ValueError(
                    f"Cannot resume {path}: it holds the state of {sum(saved)} callback(s) at positions "
                    f"{[i for i, s in enumerate(saved) if s]}, this run has stateful callbacks at "
                    f"{[i for i, w in enumerate(wanted) if w]}; pass the same callbacks in the same order, "
                    "or resume=False"
                )
            for callback, state in zip(self.callbacks, states):
                if state is not None:
                    callback.load_state_dict(state)

    def _check_resumable(self, saved: Mapping[str, Any], path: Path) -> None:
        current = self.config.to_dict()
        order_fields = ("batch_size", "grad_accumulation", "seed", "shuffle", "drop_last")
        changed = [name for name in order_fields if name in saved and saved[name] != current[name]]
        if changed:
            details = ", ".join(f"{name}: {saved[name]!r} -> {current[name]!r}" for name in changed)
            raise ValueError(
                f"Cannot resume {path}: the data order depends on {', '.join(changed)}, which changed ({details}); "
                "restore those settings, pass resume=False, or use another out_dir"
            )
        others = [name for name in current if name in saved and saved[name] != current[name] and name not in order_fields]
        if others:
            logger.info("resuming with changed settings: %s", ", ".join(others))

    def _load_rank_state(self, step: int) -> dict[str, Any] | None:
        path = rank_file(self.out_dir, self.rank)
        if path.is_file():
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if payload.get("step") == step:
                return payload
        warnings.warn(
            f"No RNG state of rank {self.rank} for step {step} ({path}); this rank's RNGs are reseeded, so the "
            "resumed run is not an exact continuation on this rank"
        )
        return None

    # ------------------------------------------------------------------ the loop
    def _train(self, progress: Any) -> None:
        state, plan, config = self.state, self.plan, self.config
        # training mode (dropout on), whatever mode the model came in -- e.g. after an evaluation
        # with model.eval(); validation switches to eval and back
        self.model.train()
        for callback in self.callbacks:
            callback.on_train_start(state)
        if self._step_unvalidated() and self._validation_due(epoch_ended=state.batch_in_epoch == 0):
            self._validate_and_checkpoint()  # the validation an interruption skipped
        while state.step < plan.total_steps and not (self.stopped_early or state.should_stop):
            order = epoch_order(plan.num_samples, config.seed, state.epoch, config.shuffle)
            loader = DataLoader(
                self.train_data,
                batch_sampler=RankBatches(plan, order, state.batch_in_epoch, self.rank),
                collate_fn=self.collate_fn or default_collate,
                num_workers=config.num_workers,
                pin_memory=self.device.type == "cuda",
                generator=torch.Generator().manual_seed(epoch_seed(config.seed, state.epoch)),  # not the global RNG
            )
            losses: list[Tensor] = []
            for index, batch in enumerate(loader, start=state.batch_in_epoch):
                group_start = index - index % config.grad_accumulation
                group_end = min(group_start + config.grad_accumulation, plan.batches_per_epoch)
                state.batch_in_epoch = index
                losses.append(self._forward_backward(move_to_device(batch, self.device, non_blocking=True),
                                                     group_end - group_start, last=index + 1 == group_end))
                if index + 1 < group_end:
                    continue
                self._optimizer_step(torch.stack(losses).mean(), next_batch=group_end)
                losses = []
                progress.update(1)
                if self._after_step(progress):
                    break
            else:
                continue
            break
        if self._step_unvalidated():
            self._validate()
        self._checkpoint()
        if self.world_size > 1:
            dist.barrier()  # every file is complete before any rank returns

    def _forward_backward(self, batch: Any, group_size: int, *, last: bool) -> Tensor:
        ddp = isinstance(self.model, nn.parallel.DistributedDataParallel)
        context = self.model.no_sync() if ddp and not last else contextlib.nullcontext()
        with context:
            loss, extras = split_loss(self.loss_fn(self.model, batch, self.state))
            if not loss.requires_grad:
                raise ValueError(
                    "loss_fn returned a loss without gradient (requires_grad=False); compute it from the model's "
                    "output and do not detach it or wrap it in torch.no_grad()"
                )
            (loss / group_size).backward()
        for name, value in extras.items():
            self.running.add(f"train_{name}", value)
        return loss.detach()

    def _optimizer_step(self, loss: Tensor, next_batch: int) -> None:
        state, config = self.state, self.config
        if config.clip_grad_norm is not None:
            norm = nn.utils.clip_grad_norm_(self.module.parameters(), config.clip_grad_norm)
            self.running.add("grad_norm", norm)
        state.lr = self.optimizer.param_groups[0]["lr"]
        self.updating = True
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.loss = loss
        self.running.add("train_loss", loss)
        if next_batch == self.plan.batches_per_epoch:
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        else:
            state.batch_in_epoch = next_batch
        self.committed_batch = state.batch_in_epoch
        self.snapshot = capture_rng()
        self._commit_buffers()
        self.updating = False

    def _after_step(self, progress: Any) -> bool:
        """Logging, callbacks, validation and checkpoints after a step; True = stop."""
        state, config = self.state, self.config
        epoch_ended = state.batch_in_epoch == 0
        if state.step % config.log_every == 0 or state.step == self.plan.total_steps:
            event = {"event": "train", "step": state.step, "epoch": state.epochs_completed, **self.running.reduce(self.world_size),
                     "lr": state.lr, "elapsed": self._elapsed()}
            self._record(event)
            progress.set_postfix(loss=f"{event.get('train_loss', float('nan')):.4g}", lr=f"{state.lr:.3g}", refresh=False)
        for callback in self.callbacks:
            callback.on_step_end(state)
        if self.world_size > 1 and self.callbacks:
            flag = torch.tensor([float(state.should_stop)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            state.should_stop = bool(flag.item())
        if self._validation_due(epoch_ended):
            self._validate_and_checkpoint()
        elif config.checkpoint_every is not None and state.step % config.checkpoint_every == 0:
            self._checkpoint()
        return self.stopped_early or state.should_stop or state.step >= self.plan.total_steps

    def _step_unvalidated(self) -> bool:
        """Validation is on, training went on, and the last step has not been validated (nor stopped early)."""
        step = self.state.step
        return self.has_validation and step > 0 and self.last_validation_step != step and not self.stopped_early

    def _validation_due(self, epoch_ended: bool) -> bool:
        every = self.config.eval_every
        return epoch_ended if every is None else self.state.step % every == 0

    def _validate_and_checkpoint(self) -> None:
        if self.has_validation:
            self._validate()
        step = self.state.step
        every = self.config.checkpoint_every
        if (every is None or step % every == 0) and step < self.plan.total_steps:
            self._checkpoint()  # the final checkpoint is written after the loop

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        state, config = self.state, self.config
        metrics: dict[str, float] | None = None
        error: str | None = None
        if self.is_main:
            was_training = self.module.training
            try:
                with preserved_rng():
                    metrics = self._run_evaluation()
            except BaseException as exc:  # tell the other ranks before propagating
                error = f"{type(exc).__name__}: {exc}"
                if self.world_size > 1:
                    dist.broadcast_object_list([None, error], src=0)
                raise
            finally:
                self.module.train(was_training)
        if self.world_size > 1:
            message = [metrics, error]
            dist.broadcast_object_list(message, src=0)
            metrics, error = message
            if error is not None:
                raise RuntimeError(f"validation failed on rank 0: {error}")
        if config.monitor not in metrics:
            raise ValueError(
                f"The validation metrics {sorted(metrics)} have no {config.monitor!r} (TrainConfig.monitor); set "
                "monitor to one of them or make evaluate_fn return it"
            )
        value = metrics[config.monitor]
        improved = self._improves(value)
        if improved:
            state.best_metric, state.best_step, self.bad_validations = value, state.step, 0
        else:
            self.bad_validations += 1
        state.metrics = metrics
        self.last_validation_step = state.step
        self._record({"event": "validation", "step": state.step, "epoch": state.epochs_completed, **metrics,
                      "lr": state.lr, "elapsed": self._elapsed()})
        if improved and self.is_main and self.out_dir is not None:
            atomic_save(self._best_payload(metrics), self.out_dir / BEST_NAME)
        if config.patience is not None and not improved and self.bad_validations >= config.patience:
            self.stopped_early = True
            logger.info("early stopping at step %d: no improvement of %s for %d validations",
                        state.step, config.monitor, self.bad_validations)
        for callback in self.callbacks:
            callback.on_validation_end(state, metrics)

    def _run_evaluation(self) -> dict[str, float]:
        if self.evaluate_fn is not None:
            self.module.eval()
            with torch.no_grad():
                raw = self.evaluate_fn(self.module, self.val_data)
            if not isinstance(raw, Mapping):
                raise TypeError(f"Expected evaluate_fn to return a dict of metric name -> float, got {type(raw).__name__}")
        else:
            raw = evaluate(self.module, self.val_data, loss_fn=self.loss_fn, collate_fn=self.collate_fn,
                           batch_size=self.config.batch_size, device=self.device)
        return {str(name): float(value) for name, value in raw.items()}

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        best = self.state.best_metric
        if best is None or math.isnan(best):
            return True
        delta = self.config.min_delta
        return value < best - delta if self.config.mode == "min" else value > best + delta

    # ------------------------------------------------------------------ files
    def _record(self, event: dict[str, Any]) -> None:
        self.history.append(event)
        logger.info("%s", event)
        if self.is_main and self.out_dir is not None:
            with open(self.out_dir / METRICS_NAME, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(event) + "\n")

    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.start_time

    def _commit_buffers(self) -> None:
        """Copy the model's buffers as of this completed step. A forward pass changes some buffers
        in place without a trace (BatchNorm's running statistics do not even bump the tensor's
        version), so an interrupted step's changes are undone from these copies. Buffers over
        :data:`COPIED_BUFFER_LIMIT` elements (constant tables, as a rule) are not copied, only their
        identity and version are noted."""
        for name, buffer in self.module.named_buffers():
            if buffer.numel() > COPIED_BUFFER_LIMIT:
                self.buffer_versions[name] = (id(buffer), buffer._version)
                continue
            copy = self.committed_buffers.get(name)
            if copy is None or copy.shape != buffer.shape or copy.dtype != buffer.dtype or copy.device != buffer.device:
                self.committed_buffers[name] = buffer.detach().clone()
            else:
                copy.copy_(buffer.detach())

    def _committed_state_dict(self) -> dict[str, Any] | None:
        """The model's state dict as of the last completed step, or None when a large (uncopied)
        buffer has changed since then."""
        state_dict = self.module.state_dict()
        for name, buffer in self.module.named_buffers():
            if name not in state_dict:  # a non-persistent buffer
                continue
            if name in self.committed_buffers:
                state_dict[name] = self.committed_buffers[name]
            elif self.buffer_versions.get(name) != (id(buffer), buffer._version):
                return None
        return state_dict

    def _model_payload(self, kind: str, state_dict: dict[str, Any] | None = None) -> dict[str, Any]:
        """What ``checkpoint.pt`` and ``best.pt`` share: the model, the position, the best value, the config."""
        state = self.state
        return {
            "format": CHECKPOINT_FORMAT, "kind": kind,
            "model": self.module.state_dict() if state_dict is None else state_dict,
            "step": state.step, "epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch,
            "best_metric": state.best_metric, "best_step": state.best_step, "config": self.config.to_dict(),
        }

    def _best_payload(self, metrics: dict[str, float]) -> dict[str, Any]:
        return {**self._model_payload("best"), "monitor": self.config.monitor, "metrics": dict(metrics)}

    def _rank_state(self) -> dict[str, Any]:
        return {"rng": rng_to_payload(self.snapshot), "running": self.running.state_dict()}

    def _checkpoint(self, state_dict: dict[str, Any] | None = None) -> None:
        if self.out_dir is None:
            return
        state = self.state
        if self.is_main:
            payload = {
                **self._model_payload("checkpoint", state_dict),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "metrics": dict(state.metrics),
                "bad_validations": self.bad_validations, "last_validation_step": self.last_validation_step,
                "stopped_early": self.stopped_early, "history": [dict(e) for e in self.history],
                "elapsed": self._elapsed(), "world_size": self.world_size, "rank_state": self._rank_state(),
                "callbacks": [callback.state_dict() for callback in self.callbacks],
            }
            atomic_save(payload, self.out_dir / CHECKPOINT_NAME)
        else:
            payload = {"format": CHECKPOINT_FORMAT, "kind": "rank_state", "rank": self.rank, "step": state.step, **self._rank_state()}
            atomic_save(payload, rank_file(self.out_dir, self.rank))

    def _save_after_exception(self) -> None:
        if self.out_dir is None or self.snapshot is None:
            return
        if self.updating:
            warnings.warn(
                f"Training was interrupted during the parameter update of step {self.state.step + 1}; no checkpoint "
                f"written (the last one in {self.out_dir} stays)"
            )
            return
        state_dict = self._committed_state_dict()
        if state_dict is None:
            warnings.warn(
                f"Training was interrupted after step {self.state.step + 1} had changed a large model buffer (over "
                f"{COPIED_BUFFER_LIMIT:,} elements, not copied at every step); no checkpoint written (the last one "
                f"in {self.out_dir} stays)"
            )
            return
        self.state.batch_in_epoch = self.committed_batch  # it pointed at the batch being processed
        try:
            self._checkpoint(state_dict)
            logger.info("interrupted: checkpoint of step %d written to %s", self.state.step, self.out_dir)
        except Exception as exc:  # never hide the original exception
            warnings.warn(f"Could not write the checkpoint after an exception: {exc!r}")

    def _result(self) -> FitResult:
        state = self.state
        return FitResult(
            best_metric=state.best_metric,
            best_step=state.best_step,
            steps=state.step,
            epochs_completed=state.epochs_completed,
            stopped_early=self.stopped_early or state.should_stop,
            history=self.history,
            out_dir=self.out_dir,
            resumed_from=self.resumed_from,
        )


def _progress_bar(config: TrainConfig, is_main: bool, total: int, initial: int) -> Any:
    if not (config.progress and is_main):
        return _NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True, disable=None)


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _resolve_device(requested: str | None, model: nn.Module, info: DistributedInfo) -> torch.device:
    if requested is not None:
        device = torch.device(requested)
        if device.type == "cuda" and device.index is None and info.is_distributed:
            device = torch.device("cuda", info.local_rank)
        return device
    if info.is_distributed and torch.cuda.is_available():
        return torch.device("cuda", info.local_rank)
    parameter = next(iter(model.parameters()), None)
    if parameter is not None and parameter.device.type != "cpu":
        return parameter.device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class _RunningMeans:
    """Sums of logged values since the last log event, kept on the device (no sync per step)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, value: Tensor | float) -> None:
        if isinstance(value, Tensor):
            value = value.detach().to(self.device, torch.float64).reshape(())
        else:
            value = torch.tensor(float(value), dtype=torch.float64, device=self.device)
        self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.counts[name] = self.counts.get(name, 0) + 1

    def reduce(self, world_size: int) -> dict[str, float]:
        """Means over the steps since the last call and over ranks (a collective when
        ``world_size > 1``); resets."""
        names = sorted(self.sums)
        if not names:
            return {}
        sums = torch.stack([self.sums[name] for name in names])
        counts = torch.tensor([float(self.counts[name]) for name in names], dtype=torch.float64, device=self.device)
        if world_size > 1:
            packed = torch.cat([sums, counts])
            dist.all_reduce(packed)
            sums, counts = packed[: len(names)], packed[len(names) :]
        means = (sums / counts).tolist()
        self.sums, self.counts = {}, {}
        return dict(zip(names, means))

    def state_dict(self) -> dict[str, Any]:
        return {"sums": {k: float(v) for k, v in self.sums.items()}, "counts": dict(self.counts)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sums = {k: torch.tensor(v, dtype=torch.float64, device=self.device) for k, v in state["sums"].items()}
        self.counts = dict(state["counts"])
