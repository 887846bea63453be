"""Classifier adapter around a PyTorch logistic layer stored as a state dict with its scaling."""
import torch


class TorchClassifier:
    name = "torch"

    def __init__(self, path):
        saved = torch.load(path, weights_only=True)
        self._mean, self._scale = saved["mean"], saved["scale"]
        self._layer = torch.nn.Linear(len(self._mean), 1)
        self._layer.load_state_dict(saved["state"])
        self._layer.eval()

    def probability(self, vector):
        with torch.no_grad():
            x = (torch.tensor(vector, dtype=torch.float32) - self._mean) / self._scale
            return float(torch.sigmoid(self._layer(x))[0])
