import numpy as np
import torch
from torch.nn import functional as F

from attacks.inversion import analytic_inversion, cosine_inversion, infer_labels, invert
from benchmark.datasets import load_dataset
from benchmark.metrics import PSNR_CAP, label_accuracy, match_batch, psnr, ssim
from benchmark.models import build_model, flat_gradient, get_flat


def _gradient(model, x, y):
    return flat_gradient(model, F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))).numpy()


def test_analytic_inversion_recovers_a_single_digit_exactly():
    digits = load_dataset("digits")
    model = build_model("mlp", (1, 8, 8), 10, seed=0)
    x = np.array(digits.x_train[:1], dtype=np.float64)
    y = np.array(digits.y_train[:1])
    update = _gradient(model, x, y)
    image = analytic_inversion(model, update, (1, 8, 8))
    assert np.abs(image - x[0]).max() < 1e-8
    assert infer_labels(model, update, 1)[0] == y[0]
    images, labels = invert(model, get_flat(model).numpy(), update, 1, (1, 8, 8), seed=0)
    assert psnr(images, x)[0] == PSNR_CAP and labels[0] == y[0]


def test_analytic_inversion_needs_a_fully_connected_first_layer():
    model = build_model("cnn", (1, 8, 8), 10, seed=0)
    update = _gradient(model, np.zeros((1, 1, 8, 8)), np.array([3]))
    assert analytic_inversion(model, update, (1, 8, 8)) is None


def test_labels_of_a_batch_come_from_the_negative_bias_gradient():
    digits = load_dataset("digits")
    model = build_model("mlp", (1, 8, 8), 10, seed=1)
    pick = [np.flatnonzero(digits.y_train == c)[0] for c in (2, 7, 9)]
    update = _gradient(model, np.array(digits.x_train[pick], dtype=np.float64), np.array(digits.y_train[pick]))
    assert sorted(infer_labels(model, update, 3)) == [2, 7, 9]


def test_cosine_inversion_moves_towards_the_true_input():
    digits = load_dataset("digits")
    model = build_model("mlp", (1, 8, 8), 10, seed=0)
    x = np.array(digits.x_train[:1], dtype=np.float64)
    update = _gradient(model, x, np.array(digits.y_train[:1]))
    start = cosine_inversion(model, update, digits.y_train[:1], (1, 8, 8), seed=0, steps=0)
    found = cosine_inversion(model, update, digits.y_train[:1], (1, 8, 8), seed=0, steps=100)
    assert psnr(found, x)[0] > psnr(start, x)[0] + 5.0


def test_psnr_and_ssim_known_values():
    true = np.zeros((1, 1, 8, 8))
    noisy = true + 0.1
    assert abs(psnr(noisy, true)[0] - 20.0) < 1e-5  # 10 log10(1 / 0.01)
    assert psnr(true, true)[0] == PSNR_CAP
    assert abs(ssim(true + 0.5, true + 0.5)[0] - 1.0) < 1e-9
    assert ssim(np.random.default_rng(0).random((1, 1, 8, 8)), true + 0.5)[0] < 0.5


def test_matching_makes_batch_scores_order_free():
    rng = np.random.default_rng(0)
    true = rng.random((3, 1, 8, 8))
    shuffled = true[[2, 0, 1]]
    matched, target = match_batch(shuffled, true)
    assert np.array_equal(matched, target)


def test_label_accuracy_counts_multisets():
    assert label_accuracy(np.array([1, 1, 2]), np.array([2, 1, 1])) == 1.0
    assert label_accuracy(np.array([1, 1, 1]), np.array([1, 2, 3])) == 1 / 3
