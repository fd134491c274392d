"""The trainer: recipes, the epoch loop, per-epoch checkpoints, resume, and DistributedDataParallel.

Each epoch draws its shuffle and augmentation from a generator seeded by (seed, epoch, rank), so a
run resumed from the checkpoint of epoch k continues exactly as if it had never stopped.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from potq.data import Dataset, augment, channel_stats, check_classes, check_digest, load_dataset, split_train_val
from potq.errors import UserError
from potq.files import file_digest, save_json, save_record, save_text, save_torch
from potq.ir.tensor import nhwc, normalize
from potq.machine import cpu_facts, cpu_text
from potq.models import build_model, check_model, source_digest, source_file
from potq.plots import plot_curves
from potq.recipes import PRECISIONS, RECIPES, Recipe, TrainConfig  # noqa: F401  (TrainConfig: re-exported)
from potq.runs.paths import CHECKPOINT, CONFIG, CURVES, HISTORY, METRICS, WEIGHTS
from potq.runs.provenance import check_model_file, config_digest, read_config

# the epoch generators seed torch with seed * 1,000,003 + epoch * 101 + rank, which must fit its 64 bits; 32 bits
# leave that room and are what other seeds take (numpy's legacy seed, DataLoader workers)
MAX_SEED = 2**32 - 1
MAX_LR = 100.0  # far above any recipe's (0.1, 0.2); beyond it training only diverges or overflows float32


def check_config(cfg: TrainConfig) -> None:
    """Every training option, before anything is read or written: one line naming the option."""
    if cfg.recipe not in RECIPES:
        raise UserError(f"unknown recipe {cfg.recipe!r}; choose from {', '.join(RECIPES)}")
    if cfg.epochs is not None and cfg.epochs < 1:
        raise UserError(f"--epochs must be a positive integer, got {cfg.epochs}")
    if cfg.train_limit is not None and cfg.train_limit < 1:
        raise UserError(f"--train-limit must be a positive integer, got {cfg.train_limit}")
    if cfg.lr is not None and not 0 < cfg.lr < math.inf:
        raise UserError(f"--lr must be a positive finite number, got {cfg.lr}")
    if cfg.lr is not None and cfg.lr > MAX_LR:
        raise UserError(f"--lr must be a positive finite number of at most {MAX_LR:g}, got {cfg.lr:g}")
    if cfg.seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {cfg.seed}")
    if cfg.seed > MAX_SEED:
        raise UserError(f"--seed must be an integer from 0 to {MAX_SEED}, got {cfg.seed}")
    if cfg.precision is not None and cfg.precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise UserError(f"--batch-size must be a positive integer, got {cfg.batch_size}")
    check_model(cfg.model)


# ---- distributed helpers -----------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_dist() -> Dist:
    """Single process, or torchrun's environment (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
        if not cuda:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    return Dist(dist.get_rank() if world > 1 else 0, world, device)


def _sum_across(values: list[float], d: Dist) -> list[float]:
    if d.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()


# ---- training ----------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mean, std, batch: int = 1000) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy) of `model` on uint8 images x."""
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), batch):
        logits = model(nhwc(normalize(x[i : i + batch], mean, std)))
        target = y[i : i + batch]
        loss += nn.functional.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(1) == target).sum().item()
    return loss / max(1, len(x)), correct / max(1, len(x))


def _epoch_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 101 + rank)


def train_epoch(
    model, opt, loss_fn, x, y, cfg: TrainConfig, recipe: Recipe, epoch: int, d: Dist, after_step=None
) -> tuple[float, float]:
    """One epoch; `after_step()` runs after every optimizer step (a per-step schedule, a weight average)."""
    model.train()
    bf16 = autocast_bf16(recipe.precision, d.device)
    g = _epoch_generator(cfg.seed, epoch, 0)
    perm = torch.randperm(len(x), generator=g)
    g_rank = _epoch_generator(cfg.seed, epoch, d.rank + 1)
    bs = recipe.batch_size
    # under DDP every rank must step every batch (or the gradient all-reduce hangs): drop a last
    # batch too small to give each rank a sample
    steps = steps_per_epoch(len(x), recipe, d)
    loss_sum, correct, count = 0.0, 0, 0
    bar = tqdm(
        range(steps),
        desc=f"epoch {epoch}/{recipe.epochs}",
        unit="batch",
        disable=not d.main,
        leave=False,
        dynamic_ncols=True,
        mininterval=1.0,
    )
    t0 = time.perf_counter()
    for step in bar:
        idx = perm[step * bs : (step + 1) * bs][d.rank :: d.world].to(d.device)
        if len(idx) == 0:
            continue
        xb = normalize(x[idx], cfg.mean, cfg.std)
        xb = nhwc(augment(xb, recipe.crop_pad, recipe.flip, g_rank))
        yb = y[idx]
        with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(xb)
            loss = loss_fn(logits, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step()
        loss_sum += loss.item() * len(idx)
        correct += (logits.argmax(1) == yb).sum().item()
        count += len(idx)
        bar.set_postfix(
            loss=f"{loss_sum / count:.3f}", img_s=f"{count * d.world / (time.perf_counter() - t0):.0f}", refresh=False
        )
    loss_sum, correct, count = _sum_across([loss_sum, correct, count], d)
    return loss_sum / count, correct / count


def autocast_bf16(precision: str, device: torch.device) -> bool:
    """Whether training autocasts to bfloat16 (see potq.recipes.PRECISIONS). On a CPU, "auto" asks for
    AMX tiles: there bf16 convolutions run about 2x faster than fp32 (benchmarks/train_throughput.py);
    without them oneDNN emulates bf16, slower than fp32."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.cpu._is_amx_tile_supported())  # no public query of this yet
    except AttributeError:
        return False


def make_optimizer(params, recipe: Recipe, steps_per_epoch: int = 1):
    """SGD with momentum and weight decay, and the recipe's schedule.

    "cosine" is stepped once per epoch (the reference report's CosineAnnealingLR); "linear" once per
    optimizer step: `per_step_schedule(recipe)` says which.
    """
    opt = torch.optim.SGD(
        params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay, nesterov=recipe.nesterov
    )
    if not per_step_schedule(recipe):
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe.epochs, eta_min=recipe.eta_min)
    total = max(2, recipe.epochs * steps_per_epoch)
    warmup = min(total - 1, max(1, round(recipe.warmup * total)))

    def factor(step: int) -> float:
        if step < warmup:
            return recipe.warmup_start + (1 - recipe.warmup_start) * step / warmup
        return max(0.0, (total - step) / (total - warmup))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def param_groups(model: nn.Module, recipe: Recipe) -> list[dict]:
    """The optimizer's parameter groups: all together, or (decay_norm_and_bias=False) the weights of
    convolutions and linear layers apart from the BatchNorm parameters and biases, which get no decay."""
    if recipe.decay_norm_and_bias:
        return [{"params": list(model.parameters())}]
    no_decay = {
        id(p)
        for m in model.modules()
        for name, p in m.named_parameters(recurse=False)
        if name == "bias" or isinstance(m, nn.modules.batchnorm._NormBase)
    }
    params = list(model.parameters())
    return [
        {"params": [p for p in params if id(p) not in no_decay]},
        {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
    ]


@torch.no_grad()
def whiten_first_conv(model: nn.Module, x: torch.Tensor, eps: float = 5e-4) -> None:
    """Set the first convolution's filters to the PCA whitening of its input patches in `x` (normalized
    images): filter k is eigenvector k of the patch covariance over sqrt(its eigenvalue + eps), the
    largest first; filters beyond the patch dimension keep their random start."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None or conv.groups != 1:
        return
    patches = nn.functional.unfold(
        x.float(), conv.kernel_size, dilation=conv.dilation, padding=conv.padding, stride=conv.stride
    )  # N, C*k*k, L
    patches = patches.transpose(1, 2).reshape(-1, patches.shape[1]).double()
    patches = patches - patches.mean(0)
    values, vectors = torch.linalg.eigh(patches.T @ patches / len(patches))
    order = values.argsort(descending=True)[: min(conv.out_channels, len(values))]
    filters = (vectors[:, order] / (values[order] + eps).sqrt()).T
    conv.weight[: len(order)] = filters.reshape(len(order), *conv.weight.shape[1:]).to(conv.weight.dtype)


def per_step_schedule(recipe: Recipe) -> bool:
    return recipe.schedule == "linear"


def steps_per_epoch(n: int, recipe: Recipe, d: Dist) -> int:
    return (
        math.ceil(n / recipe.batch_size) if d.world == 1 or n % recipe.batch_size >= d.world else n // recipe.batch_size
    )


def make_ema(model: nn.Module, recipe: Recipe):
    """An exponential moving average of the weights and BatchNorm buffers, or None when the recipe has none."""
    if not recipe.ema_decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True)


def prepare_data(cfg: TrainConfig, data: Dataset) -> dict[str, np.ndarray]:
    """Split the training set into train and validation, apply --train-limit, fill cfg from the data."""
    train_idx, val_idx = split_train_val(len(data.train_x), cfg.val_size, cfg.seed)
    if cfg.train_limit:
        train_idx = train_idx[: cfg.train_limit]
    if cfg.in_shape and (list(data.shape) != list(cfg.in_shape) or len(data.classes) != len(cfg.classes)):
        raise UserError(
            f"--data {data.source}: images of shape {list(data.shape)} in {len(data.classes)} classes, but the run "
            f"was trained on {list(cfg.in_shape)} in {len(cfg.classes)} classes"
        )
    if cfg.classes:
        check_classes(data, cfg.classes)
    check_digest(data, cfg.data_digest)
    cfg.in_shape = list(data.shape)
    cfg.classes = list(data.classes)
    cfg.data_digest = data.digest
    if not cfg.mean:
        cfg.mean, cfg.std = channel_stats(data.train_x[train_idx])
    return {
        "train_x": data.train_x[train_idx],
        "train_y": data.train_y[train_idx],
        "val_x": data.train_x[val_idx],
        "val_y": data.train_y[val_idx],
        "test_x": np.array(data.test_x),
        "test_y": np.array(data.test_y),
    }


def new_model(cfg: TrainConfig) -> nn.Module:
    torch.manual_seed(cfg.seed)
    return build_model(cfg.model, tuple(cfg.in_shape), len(cfg.classes))


def place(model: nn.Module, device: torch.device) -> nn.Module:
    """Move to the device in channels-last (NHWC) layout: about 25% faster convolutions on CPU."""
    return model.to(device, memory_format=torch.channels_last)


def load_checkpoint(path: Path, cfg: TrainConfig) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"--resume: no checkpoint at {path}") from None
    except Exception as e:  # torch raises many types for a corrupt file
        raise UserError(f"--resume: {path} is not a readable checkpoint ({type(e).__name__})") from None
    saved = ckpt.get("config", {}) if isinstance(ckpt, dict) else {}
    for key in ("data_digest", "model_digest"):  # a checkpoint of potq 0.3 has none: nothing to compare
        if saved.get(key) and saved[key] != getattr(cfg, key):
            what = "the data's content" if key == "data_digest" else f"the model's file {source_file(cfg.model)}"
            raise UserError(f"--resume: {path} was trained from other inputs: {what} changed since; train anew")
    for key in ("model", "in_shape", "classes", "recipe", "seed"):
        if saved.get(key) != getattr(cfg, key):
            raise UserError(
                f"--resume: {path} is from another run ({key} {saved.get(key)!r}, this run {getattr(cfg, key)!r})"
            )
    # the cosine schedule is fixed by the epoch count, learning rate and batch size: a resume continues
    # the schedule it started, so these must be the ones it started with
    try:
        before = TrainConfig(**saved).recipe_values()
    except (TypeError, KeyError):
        raise UserError(f"--resume: {path} is not a potq checkpoint (its config is incomplete)") from None
    now = cfg.recipe_values()
    for key in ("epochs", "lr", "batch_size"):
        if getattr(before, key) != getattr(now, key):
            flag = "--" + key.replace("_", "-")
            raise UserError(
                f"--resume: {path} follows a schedule of {flag} {getattr(before, key)}, not {getattr(now, key)}; "
                f"resume with {flag} {getattr(before, key)}, or train anew into another --out"
            )
    return ckpt


@dataclass
class Session:
    """One training's state: what set-up makes, the loop advances, a checkpoint saves and resume restores."""

    cfg: TrainConfig
    recipe: Recipe
    d: Dist
    t: dict[str, torch.Tensor]  # train_x, train_y, val_x, val_y, test_x, test_y on the device
    model: nn.Module
    opt: torch.optim.Optimizer
    sched: object
    ema: object | None
    history: list[dict]

    @property
    def final(self) -> nn.Module:
        """What is evaluated and saved: the EMA of the weights where the recipe keeps one."""
        return self.model if self.ema is None else self.ema.module

    def state(self) -> dict:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "history": self.history,
            "config": asdict(self.cfg),
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state


def set_up(cfg: TrainConfig, out: Path, data_cache: Path | None, resume: Path | None) -> Session:
    """The data on the device, a fresh model (first conv whitened where the recipe says), optimizer,
    schedule and EMA; a checkpoint's state restored on --resume."""
    check_config(cfg)
    d = setup_dist()
    arrays = prepare_data(cfg, load_dataset(cfg.data, data_cache))
    cfg.model_digest = source_digest(cfg.model)
    recipe = cfg.recipe_values()
    ckpt = load_checkpoint(resume, cfg) if resume else None
    if ckpt is None and (out / CHECKPOINT).exists():
        raise UserError(f"--out {out} already holds a run; pass --resume to continue it or choose another folder")
    t = {k: torch.from_numpy(v).to(d.device) for k, v in arrays.items()}
    model = place(new_model(cfg), d.device)
    if recipe.whiten_first_conv and ckpt is None:
        # 2,000 images give 2 million patches: the 27x27 covariance is settled long before that
        sample = torch.randperm(len(t["train_x"]), generator=_epoch_generator(cfg.seed, 0, 0))[:2000]
        whiten_first_conv(model, normalize(t["train_x"][sample.to(d.device)], cfg.mean, cfg.std))
    opt, sched = make_optimizer(param_groups(model, recipe), recipe, steps_per_epoch(len(t["train_x"]), recipe, d))
    s = Session(cfg, recipe, d, t, model, opt, sched, make_ema(model, recipe), [])
    if ckpt:
        restore(s, ckpt, resume)
    return s


def restore(s: Session, ckpt: dict, resume: Path) -> None:
    try:
        s.model.load_state_dict(ckpt["model"])
        s.opt.load_state_dict(ckpt["optimizer"])
        s.sched.load_state_dict(ckpt["scheduler"])
        if s.ema is not None:
            s.ema.load_state_dict(ckpt["ema"])
        s.history = list(ckpt["history"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise UserError(f"--resume: {resume} lacks or mismatches a field ({type(e).__name__}: {e})") from None


def train(cfg: TrainConfig, out: Path, data_cache: Path | None = None, resume: Path | None = None) -> dict:
    """Train and write history.csv, curves.png, metrics.json, weights and checkpoints into `out`."""
    s = set_up(cfg, out, data_cache, resume)
    if s.d.main:
        out.mkdir(parents=True, exist_ok=True)
        save_json(asdict(cfg), out / CONFIG)
    start = time.perf_counter() - sum(h["seconds"] for h in s.history)
    net = nn.parallel.DistributedDataParallel(s.model) if s.d.world > 1 else s.model
    for epoch in range(len(s.history) + 1, s.recipe.epochs + 1):
        run_epoch(s, net, epoch)
        if s.d.main:
            save_torch(s.state(), out / CHECKPOINT)
            write_history(s.history, out)
    metrics = finish(s, out, time.perf_counter() - start) if s.d.main else {}
    if s.d.world > 1:
        dist.barrier()
    return metrics


def run_epoch(s: Session, net: nn.Module, epoch: int) -> None:
    """One epoch of training, the schedule's step, validation; its row appended to the history."""
    recipe, t = s.recipe, s.t
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

    def after_step() -> None:
        if per_step_schedule(recipe):
            s.sched.step()
        if s.ema is not None:
            s.ema.update_parameters(s.model)

    t0 = time.perf_counter()
    lr = s.opt.param_groups[0]["lr"]
    train_loss, train_acc = train_epoch(
        net, s.opt, loss_fn, t["train_x"], t["train_y"], s.cfg, recipe, epoch, s.d, after_step
    )
    if not per_step_schedule(recipe):
        s.sched.step()
    val_loss, val_acc = (
        evaluate(s.final, t["val_x"], t["val_y"], s.cfg.mean, s.cfg.std)
        if len(t["val_x"])
        else (float("nan"), float("nan"))
    )
    row = dict(
        epoch=epoch,
        lr=lr,
        train_loss=train_loss,
        train_acc=train_acc,
        val_loss=val_loss,
        val_acc=val_acc,
        seconds=time.perf_counter() - t0,
    )
    s.history.append(row)
    if s.d.main:
        tqdm.write(
            f"epoch {epoch}/{recipe.epochs}  train loss {train_loss:.4f} acc {train_acc:.4f}  "
            f"val loss {val_loss:.4f} acc {val_acc:.4f}  {row['seconds']:.1f}s"
        )


def finish(s: Session, out: Path, seconds: float) -> dict:
    """Test metrics, the final weights and the curves: metrics.json."""
    t, d = s.t, s.d
    test_loss, test_acc = evaluate(s.final, t["test_x"], t["test_y"], s.cfg.mean, s.cfg.std)
    save_torch(s.final.state_dict(), out / WEIGHTS)
    plot_curves(s.history, out / CURVES)
    metrics = {
        "model": s.cfg.model,
        "params": sum(p.numel() for p in s.model.parameters()),
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "model_size_mb": (out / WEIGHTS).stat().st_size / 1e6,
        "weights_sha256": file_digest(out / WEIGHTS),  # the weights these figures are of (potq.runs.provenance)
        "config_sha256": config_digest(s.cfg),  # the config.json they were trained with: an edit is refused
        "epochs": s.recipe.epochs,
        "seconds": seconds,
        "train_images": len(t["train_x"]),
        "val_images": len(t["val_x"]),
        "test_images": len(t["test_x"]),
        "world_size": d.world,
        "device": str(d.device),
        "machine": machine_name(d.device),
        "recipe": asdict(s.recipe),
        "training_arithmetic": "bf16 autocast" if autocast_bf16(s.recipe.precision, d.device) else "fp32",
    }
    save_record(metrics, out / METRICS)
    return metrics


def write_history(history: list[dict], out: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    save_text(buf.getvalue(), out / HISTORY)


def machine_name(device: torch.device) -> str:
    """The machine that trained, in words (metrics.json's `machine`, the report's Machine row): the GPU where one
    trained, and the CPU's model and flags always (potq.machine: they decide the kernels and bf16 autocast)."""
    gpu = f"{torch.cuda.get_device_name(device)}; " if device.type == "cuda" else ""
    return f"{gpu}{cpu_text(cpu_facts())}, {os.cpu_count()} CPU cores, torch {torch.__version__}"


def load_trained(run: Path) -> tuple[nn.Module, TrainConfig]:
    """The FP32 model and config of a finished training run."""
    run = Path(run)
    if not (run / CONFIG).exists() or not (run / WEIGHTS).exists():
        raise UserError(f"--run {run}: no trained weights there (expected {CONFIG} and {WEIGHTS})")
    cfg = read_config(run)
    check_model_file(cfg, run / WEIGHTS)
    model = build_model(cfg.model, tuple(cfg.in_shape), len(cfg.classes))
    try:
        model.load_state_dict(torch.load(run / WEIGHTS, map_location="cpu", weights_only=True))
    except Exception as e:
        raise UserError(f"--run {run}: {WEIGHTS} does not fit model {cfg.model} ({type(e).__name__})") from None
    return model.eval(), cfg
