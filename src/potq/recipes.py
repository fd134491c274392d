"""Training recipes: one dataclass of hyperparameters, the named recipes, and a run's training settings
(`TrainConfig`, the one home of their defaults). No torch: --help lists the recipes and shows the defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

# the arithmetic of training's forward and backward passes; the weights, their updates and every
# evaluation stay float32. "bf16": autocast to bfloat16; "auto": bf16 where the hardware multiplies it
# natively (a CPU with AMX tiles, a GPU with bf16), else fp32
PRECISIONS = ("fp32", "bf16", "auto")


@dataclass(frozen=True)
class Recipe:
    epochs: int = 50
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    eta_min: float = 1e-6
    label_smoothing: float = 0.0
    crop_pad: int = 4  # pixels of zero padding before the random crop (a translation of up to this many)
    flip: bool = True
    # "cosine": CosineAnnealingLR stepped once per epoch (the reference report's);
    # "linear": a linear warm-up over the first `warmup` fraction of all steps from lr * warmup_start, then
    # a linear decay to 0, stepped per batch (a fraction, so that --epochs keeps the schedule's shape)
    schedule: str = "cosine"
    warmup: float = 0.0
    warmup_start: float = 0.1
    ema_decay: float = 0.0  # per optimizer step; 0 turns the exponential moving average of weights off
    # False: no weight decay on BatchNorm scales and shifts nor on biases (decay only the weights that
    # multiply), as the fast CIFAR-10 trainers do: decaying a BatchNorm scale only shrinks what the
    # next BatchNorm restores
    decay_norm_and_bias: bool = True
    # True: the first convolution starts as the PCA whitening of its input patches (airbench's whitening
    # layer, here only an initialization: the layer then trains like the others)
    whiten_first_conv: bool = False
    precision: str = "fp32"  # one of PRECISIONS


RECIPES: dict[str, Recipe] = {
    # the reference report: SGD(0.1, 0.9, 5e-4), CosineAnnealingLR(T_max=epochs, eta_min=1e-6), 50 epochs
    "seed": Recipe(),
    # the same optimizer with Nesterov momentum and label smoothing, for shorter runs
    "seed-ls": Recipe(nesterov=True, label_smoothing=0.1),
    # 10 epochs, after the fast CIFAR-10 trainers (airbench, "How to train your ResNet"): a larger batch,
    # a short warm-up and a linear decay to 0 stepped per batch, Nesterov momentum, label smoothing and
    # a smaller translation; benchmarks/RESULTS.md (section 7) has what each ingredient buys
    "fast": Recipe(
        epochs=10,
        batch_size=256,
        lr=0.2,
        nesterov=True,
        label_smoothing=0.2,
        crop_pad=2,
        schedule="linear",
        warmup=0.1,
        precision="auto",
    ),
}


@dataclass
class TrainConfig:
    model: str = "seed"
    data: str = "cifar10"
    recipe: str = "seed"
    epochs: int | None = None  # None: the recipe's
    seed: int = 0
    train_limit: int | None = None
    val_size: int = 5000
    batch_size: int | None = None
    lr: float | None = None  # None: the recipe's
    precision: str | None = None  # None: the recipe's (see potq.recipes.PRECISIONS)
    # filled in from the data
    in_shape: list[int] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    # the fingerprints of what the weights were trained from (potq.data.Dataset.digest; the SHA-256 of the
    # user's model file, None for a zoo model): a later step made from other ones is refused
    data_digest: str | None = None
    model_digest: str | None = None

    def recipe_values(self) -> Recipe:
        base = RECIPES[self.recipe]
        overrides = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "precision": self.precision}
        return Recipe(**{**asdict(base), **{k: v for k, v in overrides.items() if v is not None}})

    @classmethod
    def from_options(cls, options) -> TrainConfig:
        """The training settings among a command's options (`potq train`'s arguments, `potq run`'s RunOptions):
        each option named as a field the user sets; the options lack the rest, which keep their defaults."""
        data_fields = ("in_shape", "classes", "mean", "std", "data_digest", "model_digest")
        names = [f.name for f in fields(cls) if f.name not in data_fields and hasattr(options, f.name)]
        return cls(**{n: getattr(options, n) for n in names})
