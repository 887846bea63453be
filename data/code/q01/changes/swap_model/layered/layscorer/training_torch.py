"""Fit the scorer's PyTorch model: a logistic layer on standardised features (positive class: malignant)."""
from pathlib import Path

from .training import training_data


def train_torch(workdir, steps=200):
    import torch

    X, y = training_data()
    torch.manual_seed(0)
    x = torch.tensor(X, dtype=torch.float32)
    target = torch.tensor(y, dtype=torch.float32)[:, None]
    mean, scale = x.mean(dim=0), x.std(dim=0)
    layer = torch.nn.Linear(x.shape[1], 1)
    optimiser = torch.optim.Adam(layer.parameters(), lr=0.05)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(layer((x - mean) / scale), target)
        loss.backward()
        optimiser.step()
    path = Path(workdir) / "model.pt"
    torch.save({"mean": mean, "scale": scale, "state": layer.state_dict()}, path)
    return path
