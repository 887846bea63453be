"""The whole scorer in one module: data, model, rules and output side by side."""
import math
import sqlite3
from pathlib import Path

import torch

FEATURES = ("radius", "texture", "smoothness", "concave_points")
RANGES = {
    "radius": (0.0, 50.0),
    "texture": (0.0, 60.0),
    "smoothness": (0.0, 1.0),
    "concave_points": (0.0, 1.0),
}
COLUMNS = {"radius": "mean radius", "texture": "mean texture", "smoothness": "mean smoothness",
           "concave_points": "mean concave points"}
THRESHOLD = 0.5


def train(workdir, steps=200):
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = list(data.feature_names)
    X = data.data[:, [names.index(column) for column in COLUMNS.values()]]
    torch.manual_seed(0)
    x = torch.tensor(X, dtype=torch.float32)
    target = torch.tensor((data.target == 0).astype(float), dtype=torch.float32)[:, None]
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


class App:
    def __init__(self, rows, workdir):
        self.db = sqlite3.connect(str(Path(workdir) / "features.db"))
        with self.db:
            self.db.execute("DROP TABLE IF EXISTS features")
            self.db.execute("CREATE TABLE features (entity_id TEXT, feature TEXT, value REAL)")
            self.db.executemany("INSERT INTO features VALUES (?, ?, ?)",
                                [(key, name, value) for key, row in rows.items() for name, value in row.items()])
        saved = torch.load(Path(workdir) / "model.pt", weights_only=True)
        self.mean, self.scale = saved["mean"], saved["scale"]
        self.model = torch.nn.Linear(len(self.mean), 1)
        self.model.load_state_dict(saved["state"])
        self.model.eval()

    def score(self, entity_id):
        found = self.db.execute("SELECT feature, value FROM features WHERE entity_id = ?", (entity_id,)).fetchall()
        if not found:
            raise LookupError(f"no features for {entity_id!r}")
        row = dict(found)
        vector = []
        for name in FEATURES:
            if name not in row:
                raise ValueError(f"feature {name} is missing")
            value = float(row[name])
            low, high = RANGES[name]
            if not math.isfinite(value) or not low <= value <= high:
                raise ValueError(f"feature {name}={value} is outside [{low}, {high}]")
            vector.append(value)
        with torch.no_grad():
            x = (torch.tensor(vector, dtype=torch.float32) - self.mean) / self.scale
            score = float(torch.sigmoid(self.model(x))[0])
        return {"entity_id": entity_id, "score": round(score, 6), "flagged": score >= THRESHOLD}


def build_scorer(rows, workdir):
    return App(rows, workdir)
