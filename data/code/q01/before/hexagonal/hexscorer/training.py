"""Fit the scorer's model on scikit-learn's breast-cancer data and store it (positive class: malignant)."""
import pickle
from pathlib import Path

COLUMNS = {"radius": "mean radius", "texture": "mean texture", "smoothness": "mean smoothness",
           "concave_points": "mean concave points"}


def training_data():
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = list(data.feature_names)
    X = data.data[:, [names.index(column) for column in COLUMNS.values()]]
    return X, (data.target == 0).astype(int)


def train_sklearn(workdir):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = training_data()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    path = Path(workdir) / "model.pkl"
    path.write_bytes(pickle.dumps(model))
    return path
