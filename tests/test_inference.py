import numpy as np
import torch
from torch.nn import functional as F

from attacks.inversion import (
    InversionSettings,
    LocalTraining,
    analytic_inversion,
    cosine_inversion,
    infer_labels,
    invert,
    matching_loss,
)
from benchmark.datasets import load_dataset
from benchmark.metrics import PSNR_CAP, label_accuracy, match_batch, psnr, ssim
from benchmark.models import build_model, flat_gradient, get_flat
from benchmark.scenario import Scenario
from benchmark.simulation import local_update


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
    start = cosine_inversion(model, update, digits.y_train[:1], (1, 8, 8), seed=0, settings=InversionSettings(steps=0, restarts=1))
    found = cosine_inversion(model, update, digits.y_train[:1], (1, 8, 8), seed=0, settings=InversionSettings(steps=100, restarts=1))
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


def _digits(classes):
    digits = load_dataset("digits")
    pick = [np.flatnonzero(digits.y_train == c)[i] for i, c in enumerate(classes)]
    return np.array(digits.x_train[pick], dtype=np.float64), np.array(digits.y_train[pick])


def _fedavg_update(model, x, y, epochs, batch_size, learning_rate):
    scenario = Scenario(local_training="fedavg", local_epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                        samples_per_user=len(y))
    return local_update(model, torch.from_numpy(x), torch.from_numpy(y), scenario, np.random.default_rng(0))


def test_label_counts_of_a_batch_with_repeated_labels():
    model = build_model("mlp", (1, 8, 8), 10, seed=1)
    x, y = _digits([3, 3, 3, 8])
    assert infer_labels(model, _gradient(model, x, y), 4).tolist() == [3, 3, 3, 8]
    # fedavg: the local steps raise the held classes' softmax mass, so counts are estimates; classes are exact.
    assert set(infer_labels(model, _fedavg_update(model, x, y, 2, 4, 0.5), 4)) == {3, 8}


def test_one_fedavg_sample_is_recovered_exactly_by_the_analytic_inversion():
    model = build_model("mlp", (1, 8, 8), 10, seed=0)
    x, y = _digits([5])
    update = _fedavg_update(model, x, y, epochs=3, batch_size=1, learning_rate=0.5)
    assert np.abs(analytic_inversion(model, update, (1, 8, 8)) - x[0]).max() < 1e-8
    assert infer_labels(model, update, 1).tolist() == [5]


def test_the_fedavg_matching_loss_replays_the_local_steps():
    model = build_model("mlp", (1, 8, 8), 10, seed=0)
    x, y = _digits([2, 6])
    training = LocalTraining("fedavg", epochs=3, batch_size=2, learning_rate=0.5)
    target = torch.from_numpy(_fedavg_update(model, x, y, 3, 2, 0.5))
    at_truth = matching_loss(model, torch.from_numpy(x), torch.from_numpy(y), target, training, tv_weight=0.0)
    assert abs(at_truth.item()) < 1e-12
    one_step = LocalTraining("fedsgd")  # the same inputs under the wrong protocol do not match
    assert matching_loss(model, torch.from_numpy(x), torch.from_numpy(y), target, one_step, 0.0).item() > 1e-4
    elsewhere = matching_loss(model, torch.from_numpy(x[::-1].copy()), torch.from_numpy(y), target, training, 0.0)
    assert elsewhere.item() > 1e-3


def test_inversion_of_a_fedavg_batch_moves_towards_the_true_inputs():
    model = build_model("mlp", (1, 8, 8), 10, seed=0)
    x, y = _digits([1, 7])
    training = LocalTraining("fedavg", epochs=2, batch_size=2, learning_rate=0.5)
    update = _fedavg_update(model, x, y, 2, 2, 0.5)
    start = cosine_inversion(model, update, y, (1, 8, 8), seed=0, training=training, settings=InversionSettings(steps=0, restarts=1))
    images, labels = invert(model, get_flat(model).numpy(), update, 2, (1, 8, 8), seed=0, training=training,
                            settings=InversionSettings(steps=100, restarts=1))
    assert sorted(labels) == [1, 7]
    assert psnr(*match_batch(images, x)).mean() > psnr(*match_batch(start, x)).mean() + 5.0
