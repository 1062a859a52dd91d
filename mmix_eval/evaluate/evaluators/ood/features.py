"""Feature-space OOD scores from hooked hidden states: does a regularizer move separability between layers?

Taps: a named layer's output (a stage of a stage-structured model, ``1`` … ``n``, or a module name), a
convolutional map reduced by global average pooling over space; and ``penultimate``, the input of the model's
last ``nn.Linear`` (the features its logits are a linear function of, checked on the test images). Every score
is fitted on the checkpoint's *training* images (a seeded subset, size stated), never on test or OOD images;
a higher score means "in-distribution". In float64 unless said:

- ``mahalanobis`` (Lee et al. 2018, without input preprocessing): class means μ_c and the shared covariance
  Σ = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ; score −min_c (h − μ_c)ᵀ Σ⁺ (h − μ_c) (Σ⁺ the pseudo-inverse:
  a ReLU unit that never fires leaves Σ singular).
- ``rmds`` (Ren et al. 2021): −min_c [MD_c(h) − MD_0(h)], MD_0 the distance under the training images' own mean
  and covariance.
- ``knn`` (Sun et al. 2022): −‖z − z_(k)‖ with z = h / ‖h‖ and z_(k) the k-th nearest normalised training
  feature (float32, exact, in chunks).
- ``vim`` (Wang et al. 2022; penultimate only): with W, b the last layer, origin u = −W⁺ b, the principal space of
  the training features' (h − u) second moment of dimension D; score logsumexp(Wh + b) − α ‖residual of h − u‖,
  α = mean max training logit / mean training residual norm.
- ``react`` (Sun et al. 2021; penultimate only): energy logsumexp(W min(h, c) + b), c the p-th percentile of every
  training activation.
- ``ash`` (Djurisic et al. 2023, ASH-S; penultimate only, as OpenOOD applies it): keep each image's largest
  (100 − p) % activations, zero the rest, scale by exp(s₁ / s₂) (sums before and after); then energy.

Settings with a search space (KNN's k, ViM's D, ReAct's and ASH's percentile) are the papers' / OpenOOD's
defaults unless an OOD *validation* source is given: then each is chosen per layer by AUROC of the checkpoint's
held-out in-distribution images against that source, never by test images (``choose``). torch loads lazily.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mmix_eval.errors import UserError

FEATURE_SCORES = ("mahalanobis", "rmds", "knn", "vim", "react", "ash")
HEAD_SCORES = ("vim", "react", "ash")  # through the last linear layer: the penultimate features only
PENULTIMATE = "penultimate"
DEFAULTS = {"react_percentile": 90.0, "ash_percentile": 90.0}  # KNN's k: the option; ViM's D: half the width (vim_dim)
GRIDS = {  # searched on the validation source only (pytorch-ood's hyperparameter spaces; ViM's D relative)
    "knn": ("knn_k", (1, 5, 10, 20, 50, 100, 200)),
    "react": ("react_percentile", (85.0, 90.0, 95.0, 99.0)),
    "ash": ("ash_percentile", (65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0)),
    "vim": ("vim_dim", (0.25, 0.5, 0.75)),  # shares of the feature width
}

KNN_CHUNK = 1024  # query rows per similarity block: 1024 x 50,000 float32 = 205 MB at most


def vim_dim(width: int, share: float = 0.5) -> int:
    """ViM's principal dimension D: a share of the feature width (half by default: OpenOOD's 256 of ResNet-18's
    512), at least 1 and leaving a residual space of at least 1."""
    return int(min(max(1, round(width * share)), width - 1))


@dataclass
class Head:
    """The model's last linear layer (float64), whose input is the penultimate features."""

    w: object  # (C, d)
    b: object  # (C,)

    def logits(self, h):
        return h @ self.w.T + self.b


def energy(z):
    import torch

    return torch.logsumexp(z, 1)


@dataclass
class Gaussians:
    """Class means and the shared precision (Mahalanobis), and the training images' own (RMDS's MD_0)."""

    mu: object  # (C, d): the classes present in the training subset
    prec: object
    mu0: object
    prec0: object

    @classmethod
    def fit(cls, h, y) -> Gaussians:
        import torch

        _, of = torch.unique(y, return_inverse=True)  # each image's class among those present
        mu = torch.stack([h[of == c].mean(0) for c in range(int(of.max()) + 1)])
        centred = h - mu[of]
        prec = torch.linalg.pinv(centred.T @ centred / len(h), hermitian=True)
        mu0 = h.mean(0)
        prec0 = torch.linalg.pinv((h - mu0).T @ (h - mu0) / len(h), hermitian=True)
        return cls(mu, prec, mu0, prec0)

    @staticmethod
    def _md(h, mu, prec):
        d = h - mu
        return ((d @ prec) * d).sum(1)

    def class_distances(self, h):
        """(N, C) squared Mahalanobis distances to every class mean, expanded as hᵀPh − 2 hᵀPμ + μᵀPμ: one (N, d)
        product and one (N, C), not one (N, d) x (d, d) product per class (200 of them for Tiny-ImageNet)."""
        hp = h @ self.prec
        quad = (hp * h).sum(1, keepdim=True)
        return quad - 2 * hp @ self.mu.T + ((self.mu @ self.prec) * self.mu).sum(1)[None, :]

    def mahalanobis(self, h):
        return -self.class_distances(h).min(1).values

    def rmds(self, h):
        return -(self.class_distances(h) - self._md(h, self.mu0, self.prec0)[:, None]).min(1).values


def normalised(h):
    import torch

    h = h.to(torch.float32)
    return h / h.norm(dim=1, keepdim=True).clamp(min=1e-12)


def knn_distances(bank, h, ks: tuple[int, ...]) -> dict[int, object]:
    """k -> the distance of each row of ``h`` to its k-th nearest row of ``bank`` (both normalised), exact, in
    chunks of KNN_CHUNK queries; one top-k for every k asked."""
    import torch

    z, kmax = normalised(h), max(ks)
    out = {k: [] for k in ks}
    for i in range(0, len(z), KNN_CHUNK):
        sim = z[i : i + KNN_CHUNK] @ bank.T
        top = sim.topk(kmax, dim=1).values  # descending similarity = ascending distance
        for k in ks:
            out[k].append((2 - 2 * top[:, k - 1].to(torch.float64)).clamp(min=0).sqrt())
    return {k: torch.cat(v) if v else torch.zeros(0, dtype=torch.float64) for k, v in out.items()}


@dataclass
class ViM:
    u: object
    basis: object  # (d, d - D): the residual space's orthonormal basis
    alpha: float
    dim: int

    @classmethod
    def fit(cls, h, head: Head, dim: int) -> ViM:
        import torch

        u = -(torch.linalg.pinv(head.w) @ head.b)
        x = h - u
        _, vecs = torch.linalg.eigh(x.T @ x / len(x))  # ascending: the last D columns span the principal space
        basis = vecs[:, : h.shape[1] - dim]
        alpha = float(head.logits(h).max(1).values.mean() / (x @ basis).norm(dim=1).mean())
        return cls(u, basis, alpha, dim)

    def score(self, h, head: Head):
        return energy(head.logits(h)) - self.alpha * ((h - self.u) @ self.basis).norm(dim=1)


def react_threshold(h, percentile: float) -> float:
    """The percentile of every training activation (numpy's linear interpolation, as ReAct's code)."""
    return float(np.percentile(h.flatten().cpu().numpy(), percentile))


def react_score(h, head: Head, threshold: float):
    return energy(head.logits(h.clamp(max=threshold)))


def ash_s(h, percentile: float):
    """ASH-S of (N, d) features: each row's k = d − round(d · p / 100) largest kept, scaled by exp(s₁ / s₂)."""
    import torch

    d = h.shape[1]
    k = max(1, d - int(np.round(d * percentile / 100.0)))
    s1 = h.sum(1)
    v, i = h.topk(k, dim=1)
    pruned = torch.zeros_like(h).scatter_(1, i, v)
    s2 = pruned.sum(1)
    scale = torch.where(s2 != 0, s1 / torch.where(s2 != 0, s2, 1), 0)  # nothing kept: features 0, logits b
    return pruned * torch.exp(scale)[:, None] * (s2 != 0)[:, None]


def ash_score(h, head: Head, percentile: float):
    return energy(head.logits(ash_s(h, percentile)))


@dataclass
class LayerFit:
    """Every score's fit at one layer, from the training subset's features (and its logits' head)."""

    layer: str
    width: int
    train: object  # (N, d) float64 training features (for the settings chosen on validation)
    gauss: Gaussians
    bank: object  # normalised float32 training features (KNN)
    head: Head | None  # the last linear layer where this is the penultimate layer
    settings: dict = field(default_factory=dict)  # score -> {setting: value} in use
    vims: dict = field(default_factory=dict)  # dim -> ViM
    thresholds: dict = field(default_factory=dict)  # percentile -> ReAct's threshold

    def vim(self, dim: int) -> ViM:
        if dim not in self.vims:
            self.vims[dim] = ViM.fit(self.train, self.head, dim)
        return self.vims[dim]

    def scores(self, h, which: tuple[str, ...]) -> dict:
        """score -> (N,) numpy scores of features ``h`` under the settings in use."""
        import torch

        h = h.to(torch.float64)
        out = {}
        for s in which:
            if s in HEAD_SCORES and self.head is None:
                continue
            out[s] = self.score(h, s, self.settings.get(s, {})).cpu().numpy()
        return out

    def score(self, h, s: str, st: dict):
        if s == "mahalanobis":
            return self.gauss.mahalanobis(h)
        if s == "rmds":
            return self.gauss.rmds(h)
        if s == "knn":
            return -knn_distances(self.bank, h, (st["knn_k"],))[st["knn_k"]]
        if s == "vim":
            return self.vim(st["vim_dim"]).score(h, self.head)
        if s == "react":
            p = st["react_percentile"]
            if p not in self.thresholds:
                self.thresholds[p] = react_threshold(self.train, p)
            return react_score(h, self.head, self.thresholds[p])
        return ash_score(h, self.head, st["ash_percentile"])


def fit_layer(layer: str, h, y, head: Head | None, knn_k: int) -> LayerFit:
    """The fits of every score at ``layer`` from training features ``h`` (N, d) and labels ``y``, with the
    default settings (KNN's k at most N)."""
    import torch

    h = h.to(torch.float64)
    if len(h) < 2:
        raise UserError(f"ood: feature scores expected at least 2 training images to fit on, got {len(h)}")
    if not torch.isfinite(h).all():
        raise UserError(
            f"ood: layer '{layer}' expected finite features on the training images, got "
            f"{int((~torch.isfinite(h)).any(1).sum())} images with non-finite ones"
        )
    fit = LayerFit(layer, int(h.shape[1]), h, Gaussians.fit(h, y), normalised(h), head)
    fit.settings = {"knn": {"knn_k": min(knn_k, len(h))}}
    if head is not None:
        fit.settings.update(
            vim={"vim_dim": vim_dim(fit.width)},
            react={"react_percentile": DEFAULTS["react_percentile"]},
            ash={"ash_percentile": DEFAULTS["ash_percentile"]},
        )
    return fit


def choose(fit: LayerFit, which: tuple[str, ...], h_in, h_out, auroc) -> dict[str, str]:
    """Set each searched score's setting at this layer to the grid value with the highest AUROC of held-out
    in-distribution features ``h_in`` against validation OOD features ``h_out`` (ties: the first, the smallest);
    returns score -> what was searched (for the record)."""
    import torch

    h_in, h_out = h_in.to(torch.float64), h_out.to(torch.float64)
    told = {}
    for s in [s for s in which if s in GRIDS and (s not in HEAD_SCORES or fit.head is not None)]:
        key, grid = GRIDS[s]
        if s == "vim":
            grid = tuple(dict.fromkeys(vim_dim(fit.width, g) for g in grid))
        if s == "knn":  # one top-k for the whole grid
            grid = tuple(k for k in grid if k <= len(fit.train)) or (len(fit.train),)
            di, do = knn_distances(fit.bank, h_in, grid), knn_distances(fit.bank, h_out, grid)
            got = [auroc(-di[k].numpy(), -do[k].numpy()) for k in grid]
        else:
            got = [auroc(fit.score(h_in, s, {key: g}).numpy(), fit.score(h_out, s, {key: g}).numpy()) for g in grid]
        if not np.isfinite(got).any():  # every setting overflows on the validation images: the default stays
            told[s] = f"{key}: the default (no setting of {list(grid)} gave finite validation scores)"
            continue
        best = int(np.nanargmax(got))
        fit.settings[s] = {key: grid[best]}
        told[s] = f"{key} from {list(grid)} by validation AUROC ({got[best]:.4f})"
    return told
