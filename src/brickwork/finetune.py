"""Transfer learning: freeze by name pattern, unfreeze on a schedule, per-group learning rates.

Everything here is driven by the config's `finetune:` section:

    finetune:
      freeze: backbone                 # or name patterns: ["conv1", "layer1.*"]
      frozen_bn_eval: true             # frozen BatchNorm keeps its running statistics
      unfreeze: [{at_epoch: 3, modules: ["layer4.*"]}]
      lr_mult: {backbone: 0.1}         # or any pattern; the first matching key wins
      layer_decay: 0.75                # timm layer groups, or hf/ encoder layers

Names are parameter names as in `model.named_parameters()`. A pattern (fnmatch, `*`
crosses dots) selects a parameter when it matches the full name or any module prefix of
it, so `layer4` and `layer4.*` both select all of `layer4`. `backbone` means every
parameter outside the classifier head (LoRA adapters excepted: they are new, not
pretrained), and `head` the head, found the timm way (`get_classifier()`, then the
`classifier` named in `pretrained_cfg`) or Hugging Face's (outside the base model).

Freezing happens before the optimizer is built (`build_param_groups`). The `Finetune`
callback then unfreezes on schedule: newly trainable parameters join the optimizer as new
param groups, so the existing groups keep their moments. On resume, its
`load_state_dict` re-applies the stages already done *before* the optimizer's state is
loaded (TrainState restores callbacks first), so groups, flags and learning rates match
the uninterrupted run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from torch import nn
from torch.optim import Optimizer

from brickwork.errors import ConfigError
from brickwork.models.anatomy import find_head, unwrap_model
from brickwork.models.huggingface import encoder_layer_index, transformer_of
from brickwork.registry import suggest

if TYPE_CHECKING:
    from brickwork.config import FinetuneConfig
    from brickwork.optim import Schedule
    from brickwork.state import TrainState

log = logging.getLogger("brickwork")
CONSOLE = {"console": True}  # also shown on the console, not only in train.log


def match_parameters(model: nn.Module, patterns: Iterable[str], key: str) -> list[str]:
    """Names of the parameters selected by any of `patterns`, in model order.

    A pattern that selects nothing is a ConfigError naming `key` and the top-level modules.
    """
    names = [name for name, _ in unwrap_model(model).named_parameters()]
    selected: set[str] = set()
    for pattern in patterns:
        if pattern == "backbone" or pattern == "head":
            head = find_head(model)
            hits = {n for n in names if any(_matches(n, h) for h in head) == (pattern == "head")}
            if pattern == "backbone":  # the pretrained weights: LoRA's new adapters are not
                hits = {n for n in hits if ".lora_" not in n}
        else:
            hits = {n for n in names if _matches(n, pattern)}
        if not hits:
            top = sorted({n.split(".")[0] for n in names})
            raise ConfigError(
                f"{key}: '{pattern}' matches no parameter{suggest(pattern, top)}; "
                f"top-level modules: {', '.join(top)} (patterns use fnmatch, e.g. 'layer4.*')"
            )
        selected |= hits
    return [n for n in names if n in selected]


def freeze_parameters(model: nn.Module, finetune: FinetuneConfig) -> list[str]:
    """Set `requires_grad=False` on what `finetune.freeze` selects; returns those names.

    Every `finetune.unfreeze` pattern is checked here too, before the first step: a
    pattern that matches nothing would otherwise surface only when its epoch arrives.
    """
    for index, stage in enumerate(finetune.unfreeze):
        match_parameters(model, stage.modules, f"finetune.unfreeze[{index}].modules")
    if not finetune.freeze:
        return []
    patterns = ["backbone"] if finetune.freeze == "backbone" else list(finetune.freeze)
    frozen = match_parameters(model, patterns, "finetune.freeze")
    parameters = dict(unwrap_model(model).named_parameters())
    for name in frozen:
        parameters[name].requires_grad_(False)
    if not any(p.requires_grad for p in parameters.values()):
        raise ConfigError(
            "finetune.freeze froze every parameter; leave the head trainable "
            "(freeze: backbone) or list fewer patterns"
        )
    return frozen


def set_frozen_batchnorm_eval(model: nn.Module) -> int:
    """Put BatchNorm layers whose parameters are all frozen in eval mode; returns how many."""
    count = 0
    for module in unwrap_model(model).modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()
                count += 1
    return count


def lr_scales(model: nn.Module, finetune: FinetuneConfig) -> dict[str, float]:
    """Each parameter's multiplier of the optimizer's LR: layer decay times `lr_mult`."""
    names = [name for name, _ in unwrap_model(model).named_parameters()]
    scales = dict.fromkeys(names, 1.0)
    if finetune.layer_decay is not None:
        scales.update(_layer_decay_scales(model, finetune.layer_decay))
    claimed: set[str] = set()
    for pattern, mult in finetune.lr_mult.items():
        for name in match_parameters(model, [pattern], f"finetune.lr_mult.{pattern}"):
            if name not in claimed:  # the first matching key wins
                scales[name] *= mult
                claimed.add(name)
    return scales


def build_param_groups(
    model: nn.Module, finetune: FinetuneConfig, lr: float
) -> list[dict[str, Any]]:
    """Param groups of the trainable parameters, one per distinct LR scale, in model order."""
    scales = lr_scales(model, finetune)
    named = [(n, p) for n, p in unwrap_model(model).named_parameters() if p.requires_grad]
    return _group_by_scale(named, scales, lr)


def _group_by_scale(
    named: list[tuple[str, nn.Parameter]], scales: dict[str, float], lr: float
) -> list[dict[str, Any]]:
    groups: dict[float, dict[str, Any]] = {}
    for name, param in named:
        scale = scales[name]
        group = groups.setdefault(scale, {"params": [], "lr": lr * scale, "lr_scale": scale})
        group["params"].append(param)
    return list(groups.values())


class Finetune:
    """Callback: gradual unfreezing on schedule, and frozen BatchNorm kept in eval mode.

    Example:
        >>> callback = Finetune(model, optimizer, schedule, config.finetune, lr=1e-3)
    """

    state_key = "finetune"

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        schedule: Schedule | None,
        finetune: FinetuneConfig,
        lr: float,
    ) -> None:
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.finetune, self.lr = finetune, lr
        self.scales = lr_scales(model, finetune)
        self.applied: list[int] = []  # indices into finetune.unfreeze, in the order applied

    def on_epoch_start(self, state: TrainState) -> None:
        for index, stage in enumerate(self.finetune.unfreeze):
            # `at_epoch: N` is the N-th epoch; `state.epoch` counts the ones done, from 0.
            if stage.at_epoch <= state.epoch + 1 and index not in self.applied:
                self.unfreeze(index)
        if self.finetune.frozen_bn_eval:
            set_frozen_batchnorm_eval(self.model)  # after the loop's model.train()

    def unfreeze(self, index: int) -> None:
        """Make stage `index`'s parameters trainable and add them as new param groups."""
        stage = self.finetune.unfreeze[index]
        key = f"finetune.unfreeze[{index}].modules"
        parameters = dict(unwrap_model(self.model).named_parameters())
        newly = [
            (name, parameters[name])
            for name in match_parameters(self.model, stage.modules, key)
            if not parameters[name].requires_grad
        ]
        for _, param in newly:
            param.requires_grad_(True)
        for group in _group_by_scale(newly, self.scales, self.lr):
            add_param_group(self.optimizer, self.schedule, group, self.lr)
        self.applied.append(index)
        log.info(
            "unfroze %d parameter tensors (%s)",
            len(newly),
            ", ".join(stage.modules),
            extra=CONSOLE,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"applied": list(self.applied)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Runs before the optimizer's state is loaded: rebuild its groups to the saved shape.
        for index in state["applied"]:
            if index not in self.applied:
                self.unfreeze(int(index))


def add_param_group(
    optimizer: Optimizer, schedule: Schedule | None, group: dict[str, Any], lr: float
) -> None:
    """Add `group` so it follows the schedule as the existing groups do.

    Its LR is its own base LR times the factor the schedule has reached so far (read off
    the first group), and the scheduler's per-group lists grow by one entry.
    """
    reference = optimizer.param_groups[0]
    reference_base = lr * reference.get("lr_scale", 1.0)
    base = lr * group["lr_scale"]
    group["lr"] = base * (reference["lr"] / reference_base)
    for key in ("initial_lr", "max_lr", "min_lr"):  # what LRScheduler/OneCycleLR keep per group
        if key in reference:
            group[key] = reference[key] * base / reference_base
    optimizer.add_param_group(group)
    if schedule is None:
        return
    scheduler: Any = schedule.scheduler
    if hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs.append(group.get("initial_lr", base))
    if hasattr(scheduler, "lr_lambdas"):
        scheduler.lr_lambdas.append(scheduler.lr_lambdas[0])
    if hasattr(scheduler, "min_lrs"):
        scheduler.min_lrs.append(scheduler.min_lrs[0])
    if hasattr(scheduler, "_last_lr"):
        scheduler._last_lr.append(group["lr"])


def _layer_decay_scales(model: nn.Module, decay: float) -> dict[str, float]:
    """timm's layer-wise decay: scale `decay ** (last_layer - layer)` per layer group.

    A Hugging Face Transformer has no timm groups: its layers are the embeddings (0),
    encoder layer i (i + 1), and the head with whatever follows the last layer.
    """
    model = unwrap_model(model)
    group_matcher = getattr(model, "group_matcher", None)
    if not callable(group_matcher) and transformer_of(model) is not None:
        return _transformer_layer_scales(model, decay)
    if not callable(group_matcher):
        raise ConfigError(
            f"finetune.layer_decay: {type(model).__name__} defines no layer groups "
            "(timm's group_matcher); use a timm/ or hf/ model, or finetune.lr_mult instead"
        )
    from timm.models import group_parameters

    layer_of = group_parameters(model, group_matcher(coarse=False), reverse=True)
    last = max(layer_of.values())
    return {name: decay ** (last - layer) for name, layer in layer_of.items()}


def _transformer_layer_scales(model: nn.Module, decay: float) -> dict[str, float]:
    """Encoder layer indices: embeddings decay most, the head and the pooler not at all."""
    names = [name for name, _ in model.named_parameters()]
    indices = {name: encoder_layer_index(name) for name in names}
    last = max((i for i in indices.values() if i is not None), default=-1) + 2
    head = find_head(model)

    def layer(name: str) -> int:
        index = indices[name]
        if index is not None:
            return index + 1
        in_head = any(_matches(name, h) for h in head)
        return 0 if "embed" in name and not in_head else last

    return {name: decay ** (last - layer(name)) for name in names}


def _matches(name: str, pattern: str) -> bool:
    parts = name.split(".")
    return any(fnmatchcase(".".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))
