"""Taps: the hidden states the feature scores read, collected by forward hooks in the pass that computes the
logits (a layer's output, convolutional maps averaged over space; or the last linear layer's input)."""

from __future__ import annotations

from dataclasses import dataclass

from mmix_eval.errors import UserError
from mmix_eval.evaluate.evaluators.ood.features import PENULTIMATE, Head


@dataclass
class Tap:
    module: object
    kind: str  # "output" (a layer's output, conv maps averaged over space) or "input" (the last linear's input)


def last_linear(model):
    """The model's last ``nn.Linear`` in module order (its head), or None."""
    import torch

    found = None
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            found = m
    return found


def resolve_taps(model, names: list[str]) -> dict[str, Tap]:
    """name -> Tap: the given names (stage numbers, module names, ``penultimate``), or by default every stage output
    of a stage-structured model (its mixing points after the input) and the penultimate features."""
    from mmix_eval.evaluate.evaluators.spectra import resolve_layers

    if not names:
        names = [str(i) for i in range(1, len(getattr(model, "stages", ())) + 1)] + [PENULTIMATE]
    out = {}
    named = [n for n in names if n != PENULTIMATE]
    layers = resolve_layers(model, named, who="ood") if named else {}  # (no names there: its default stages)
    for n in names:
        if n == PENULTIMATE:
            lin = last_linear(model)
            if lin is None:
                raise UserError(
                    f"ood: layer '{PENULTIMATE}' expected a model whose logits come from an nn.Linear, got "
                    f"{type(model).__name__} with none (name its layers instead)"
                )
            out[n] = Tap(lin, "input")
        else:
            out[n] = Tap(layers[n], "output")
    return out


def head_of(model) -> Head:
    import torch

    lin = last_linear(model)
    w = lin.weight.detach().to("cpu", torch.float64)
    b = lin.bias.detach().to("cpu", torch.float64) if lin.bias is not None else torch.zeros(len(w), dtype=torch.float64)
    return Head(w, b)


class Collector:
    """Forward hooks that keep each tap's pooled features (float32) while it is open, on the model's device until
    ``features`` (one copy to the host per tap, not one per batch)."""

    def __init__(self, taps: dict[str, Tap]):
        self.taps, self.got, self.handles = taps, {n: [] for n in taps}, []

    def __enter__(self):
        import torch

        def keep(name):
            def fn(h):
                if not torch.is_tensor(h):
                    raise UserError(f"ood: layer '{name}' expected a tensor, got {type(h).__name__}")
                h = h.float()
                if h.ndim == 4:
                    h = h.mean(dim=(2, 3))  # global average pooling
                self.got[name].append(h.flatten(1))

            return fn

        for n, t in self.taps.items():
            f = keep(n)
            if t.kind == "input":
                self.handles.append(t.module.register_forward_pre_hook(lambda m, inp, f=f: f(inp[0])))
            else:
                self.handles.append(t.module.register_forward_hook(lambda m, inp, out, f=f: f(out)))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []

    def features(self) -> dict:
        import torch

        return {n: torch.cat(v).cpu() if v else torch.zeros(0) for n, v in self.got.items()}


def forward_features(model, images, taps: dict[str, Tap], device, batch_size: int, precision: str = "fp32", bar=None):
    """(logits (N, C) float32 CPU, name -> (N, d) features) of ``images`` in one pass (under torchrun each rank's
    shard, gathered)."""
    from mmix_eval import distributed
    from mmix_eval.evaluate.passes import logits_of

    with Collector(taps) as c:
        z = logits_of(model, images, batch_size, device, bar, precision)
    return z, {n: distributed.gather_rows(f, len(images)) for n, f in c.features().items()}
