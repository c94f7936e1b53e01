"""Local training and evaluation on one node's data (PyTorch), shared by every bundle.

* FedProx: ``mu/2 · ||w − w_global||²`` added to the loss when the server sends ``proximal-mu`` > 0;
* DP-SGD: Opacus with a fixed noise multiplier chosen so the whole job (all rounds) spends at most the target
  epsilon; the spent epsilon is tracked with Opacus' RDP accountant across rounds from the step history;
* metrics: loss, accuracy, AUC and a score histogram per class (lets the server pool AUC without any row).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

HIST_BINS = 50


@dataclass
class DPConfig:
    epsilon: float
    delta: float
    max_grad_norm: float = 1.0


def device_for(prefer_cuda: bool = True) -> torch.device:
    return torch.device("cuda" if prefer_cuda and torch.cuda.is_available() else "cpu")


def get_weights(model: nn.Module) -> list[np.ndarray]:
    return [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]


def set_weights(model: nn.Module, weights: list[np.ndarray]) -> None:
    keys = list(model.state_dict().keys())
    if len(keys) != len(weights):
        raise ValueError("parameter count does not match the model")
    model.load_state_dict({k: torch.as_tensor(np.asarray(w)) for k, w in zip(keys, weights, strict=True)})


def noise_multiplier(dp: DPConfig, sample_rate: float, total_steps: int) -> float:
    from opacus.accountants.utils import get_noise_multiplier

    nm: float = get_noise_multiplier(target_epsilon=dp.epsilon, target_delta=dp.delta, sample_rate=sample_rate,
                                     steps=max(1, total_steps), accountant="rdp")
    return nm


def spent_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = list(history)
    eps: float = acc.get_epsilon(delta)
    return eps


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, batch_size: int,
          proximal_mu: float = 0.0, dp: DPConfig | None = None, dp_noise: float | None = None,
          seed: int = 0, device: torch.device | None = None) -> dict[str, Any]:
    """Train in place; returns loss and, under DP, the steps taken and their sample rate."""
    device = device or torch.device("cpu")
    torch.manual_seed(seed)
    model.to(device)
    data = TensorDataset(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32))
    loader = DataLoader(data, batch_size=min(batch_size, len(data)), shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    global_params = [p.detach().clone() for p in model.parameters()]
    optimizer: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    out: dict[str, Any] = {}
    if dp is not None:
        from opacus import PrivacyEngine

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            engine = PrivacyEngine(accountant="rdp")
            model, optimizer, loader = engine.make_private(
                module=model, optimizer=optimizer, data_loader=loader,
                noise_multiplier=dp_noise if dp_noise is not None else 1.0, max_grad_norm=dp.max_grad_norm)
        out["dp_sample_rate"] = 1 / max(1, len(loader))
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    total, count, steps = 0.0, 0, 0
    for _ in range(epochs):
        for xb, yb in loader:
            if len(xb) == 0:
                continue
            xb, yb = xb.to(device), yb.to(device)
            optimizer.zero_grad()
            loss = loss_fn(model(xb).reshape(-1), yb)
            if proximal_mu > 0:
                prox = sum(((p - g) ** 2).sum() for p, g in zip(model.parameters(), global_params, strict=True))
                loss = loss + proximal_mu / 2 * prox
            loss.backward()
            optimizer.step()
            total += float(loss.item()) * len(xb)
            count += len(xb)
            steps += 1
    out.update({"loss": total / max(1, count), "steps": steps})
    return out


def predict(model: nn.Module, x: np.ndarray, device: torch.device | None = None) -> np.ndarray:
    device = device or torch.device("cpu")
    model.to(device).eval()
    with torch.no_grad():
        logits = model(torch.as_tensor(x, dtype=torch.float32, device=device)).reshape(-1)
    scores: np.ndarray = torch.sigmoid(logits).cpu().numpy()
    return scores


def auc(y: np.ndarray, scores: np.ndarray) -> float:
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, scores))


def histograms(y: np.ndarray, scores: np.ndarray) -> tuple[list[int], list[int]]:
    edges = np.linspace(0, 1, HIST_BINS + 1)
    neg, _ = np.histogram(scores[y == 0], bins=edges)
    pos, _ = np.histogram(scores[y == 1], bins=edges)
    return [int(v) for v in neg], [int(v) for v in pos]


def hist_text(values: list[int]) -> str:
    """A score histogram as a Flower metric value (the ClientApp sends ``neg`` / ``pos`` so)."""
    return ",".join(str(v) for v in values)


def hist_values(text: Any) -> list[int]:
    """:func:`hist_text` read back (the ServerApp pools them); empty for a missing metric."""
    return [int(v) for v in str(text).split(",")] if text else []


def pooled_auc(neg: list[int], pos: list[int]) -> float:
    """AUC from per-class score histograms (ties within a bin count one half), summed over nodes."""
    n_neg, n_pos = sum(neg), sum(pos)
    if not n_neg or not n_pos:
        return float("nan")
    below, area = 0, 0.0
    for ni, pi in zip(neg, pos, strict=True):
        area += pi * (below + ni / 2)
        below += ni
    return area / (n_neg * n_pos)


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, device: torch.device | None = None) -> dict[str, Any]:
    if len(y) == 0:
        return {"n": 0, "loss": 0.0, "accuracy": float("nan"), "auc": float("nan"), "neg": [], "pos": []}
    scores = predict(model, x, device)
    eps = 1e-7
    loss = float(-np.mean(y * np.log(scores + eps) + (1 - y) * np.log(1 - scores + eps)))
    neg, pos = histograms(y, scores)
    acc = float(np.mean((scores >= 0.5) == (y == 1)))
    return {"n": len(y), "loss": loss, "accuracy": acc, "auc": auc(y, scores), "neg": neg, "pos": pos}


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap of two binary masks (for segmentation-style outputs)."""
    p, t = pred.astype(bool), truth.astype(bool)
    denom = p.sum() + t.sum()
    return 1.0 if denom == 0 else float(2 * (p & t).sum() / denom)


def finite(value: float) -> float:
    return value if math.isfinite(value) else -1.0
