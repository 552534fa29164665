"""The training configuration: one frozen, validated dataclass, saved in the artifact.

Values come from (lowest to highest precedence) the defaults below, the bot's ``training:``
section in bot.yml, and command-line flags. Unknown keys are an error, never ignored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from bots.errors import ConfigError
from bots.nlu.ngrams import parse_analyzers
from bots.nlu.oos import DEFAULT_METHOD, DEFAULT_TARGET, METHODS, Target

Mode = Literal["finetune", "fast"]
_MODES = ("finetune", "fast")
_POLICY_ARCHITECTURES = ("transformer", "mlp")  # training/policy.py


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``mode='fast'`` freezes the encoder and fits linear heads only."""

    mode: Mode = "finetune"
    base_model: str = ""  # a local Hugging Face encoder folder; "" = the packaged all-MiniLM-L6-v2
    epochs: int = 4
    batch_size: int = 16
    lr_encoder: float = 5e-5
    lr_head: float = 2e-3
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    entity_loss_weight: float = 1.0
    max_length: int = 64
    validation_fraction: float = 0.15
    # K >= 2: calibrate the out-of-scope point on K-fold out-of-fold scores (K fold models, each scoring the
    # examples it was not trained on) and train the served model on every example; 0 = the held-out split.
    calibration_folds: int = 0
    patience: int = 2  # early stopping: epochs without validation improvement
    init_head_from_linear: bool = True  # fine-tune starts from the fast mode's intent head
    linear_c: float = 10.0  # inverse regularisation of the logistic-regression heads
    # Sparse n-gram features of the intent classifier (bots/nlu/ngrams.py), as Rasa's CountVectorsFeaturizer:
    # comma-separated analyzers with n-gram ranges, e.g. "word,char_wb:1-4" (Rasa's default pipeline); "" = none.
    ngram_features: str = ""
    # Customers' messages spelling-corrected against the training examples' words before the model reads them
    # (bots/nlu/spelling.py): "wher is my oder" is read as "where is my order".
    spelling: bool = True
    max_examples_per_intent: int = 0  # 0 = all
    min_examples_per_intent: int = 5  # fewer gives a warning
    seed: int = 13
    threads: int = 1
    quantize: bool = True  # also export static int8; served only if it loses < int8_max_loss points
    int8_max_loss: float = 0.5  # accuracy points
    # The out-of-scope operating point (bots/nlu/oos.py), calibrated on the held-out data:
    oos_method: str = DEFAULT_METHOD  # one of bots.nlu.oos.METHODS (chosen by bench/oos.py, see bench/RESULTS.md)
    oos_target: str = DEFAULT_TARGET  # accuracy, in-scope>=X or in-scope-drop<=X
    # The learned next-action model (training/policy.py; trained when the bot's policies ask for it):
    augmentation_factor: int = 50  # Rasa's `--augmentation`: story paths glued into N x 10 conversations; 0 = off
    policy_architecture: str = "transformer"  # or "mlp"

    def __post_init__(self) -> None:
        problems = _validate(self)
        if problems:
            raise ConfigError([f"training config: {p}" for p in problems])

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "training config") -> TrainConfig:
        """Build from plain values; unknown keys and wrong types are reported with ``where``."""
        known = {f.name: f for f in fields(cls)}
        problems = [f"{where}: unknown training key {k!r} (known: {', '.join(sorted(known))})"
                    for k in d if k not in known]
        values: dict[str, Any] = {}
        for key, value in d.items():
            if key not in known:
                continue
            default = getattr(cls(), key)
            coerced = _coerce(value, default)
            if coerced is None:
                problems.append(f"{where}: {key!r} must be {type(default).__name__}, got {value!r}")
            else:
                values[key] = coerced
        if problems:
            raise ConfigError(problems)
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError([f"{where}: {p}" for p in exc.problems]) from None

    def with_overrides(self, **overrides: Any) -> TrainConfig:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _coerce(value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        return value if isinstance(value, bool) else None
    if isinstance(default, int):
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if ok else None
    if isinstance(default, str):
        return value if isinstance(value, str) else None
    return None


def _validate(c: TrainConfig) -> list[str]:
    p = []
    if c.mode not in _MODES:
        p.append(f"mode must be one of {', '.join(_MODES)}, got {c.mode!r}")
    for name in ("epochs", "batch_size", "max_length", "threads"):
        if getattr(c, name) < 1:
            p.append(f"{name} must be at least 1")
    if c.max_length > 512:
        p.append("max_length must be at most 512")
    for name in ("lr_encoder", "lr_head", "linear_c"):
        if not getattr(c, name) > 0:
            p.append(f"{name} must be positive")
    for name in ("weight_decay", "max_grad_norm", "entity_loss_weight", "int8_max_loss"):
        if getattr(c, name) < 0:
            p.append(f"{name} must not be negative")
    if not 0.0 <= c.warmup_ratio < 1.0:
        p.append("warmup_ratio must be in [0, 1)")
    if not 0.0 <= c.validation_fraction < 0.9:
        p.append("validation_fraction must be in [0, 0.9)")
    if c.calibration_folds == 1 or not 0 <= c.calibration_folds <= 20:
        p.append(f"calibration_folds must be 0 (the held-out split) or 2 to 20, got {c.calibration_folds}")
    if c.policy_architecture not in _POLICY_ARCHITECTURES:
        p.append(f"policy_architecture must be one of {', '.join(_POLICY_ARCHITECTURES)}, "
                 f"got {c.policy_architecture!r}")
    if c.oos_method not in METHODS:
        p.append(f"oos_method must be one of {', '.join(METHODS)}, got {c.oos_method!r}")
    try:
        Target.parse(c.oos_target)
    except ValueError as exc:
        p.append(str(exc))
    try:
        parse_analyzers(c.ngram_features)
    except ValueError as exc:
        p.append(f"ngram_features: {exc}")
    for name in ("patience", "max_examples_per_intent", "min_examples_per_intent", "seed", "augmentation_factor"):
        if getattr(c, name) < 0:
            p.append(f"{name} must not be negative")
    return p
