"""Names of the data sets and models, importable without torch or scikit-learn."""

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "cifar10", "femnist")
MODELS: tuple[str, ...] = ("mlp", "cnn")
