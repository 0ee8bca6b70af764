"""Attribution by likelihood: which recovered column belongs to which user, the analytics read as evidence.

A defense that rounds, noises or pads the counts publishes how (its public
parameters), so the server can score every candidate column against every user's
published counts: log P(published counts | the column's true window sums) under the
declared mechanism, then assign columns to users by maximum likelihood (Hungarian).
A noisy count never rules a column out; only a mechanism that cannot produce the
published value (exact or rounded counts) does, and such pairs are never named.
"""

import math

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import binom

from benchmark.observation import window_lengths, window_sums

IMPOSSIBLE = -1e6  # log-likelihood charged per window the mechanism cannot produce (finite, for the assignment)


def _mechanism(parameters: dict, length: int) -> np.ndarray:
    """M[c, k] = P(published c | true checked-in count k) for one window of `length` rounds."""
    k = np.arange(length + 1)
    c = k[:, None]
    if parameters.get("count_noise_scale", 0) > 0:
        a = math.exp(-1.0 / float(parameters["count_noise_scale"]))
        table = (1 - a) / (1 + a) * a ** np.abs(c - k[None, :])
        table[0] = a ** k / (1 + a)  # clipped at 0: all the noise at or below -k
        table[length] = a ** (length - k) / (1 + a)  # clipped at the window length
        return table
    bucket = int(parameters.get("count_bucket", 1))
    return (c == (k - k % bucket)[None, :]).astype(np.float64)


def _padding(parameters: dict, length: int) -> np.ndarray:
    """Q[k, s] = P(checked in k times | contributed s times): each other round pads with the public rate."""
    rate = float(parameters.get("padding_rate", 0.0))
    s = np.arange(length + 1)
    k = s[:, None]
    if rate <= 0:
        return (k == s[None, :]).astype(np.float64)
    return binom.pmf(k - s[None, :], length - s[None, :], rate)


def count_table(parameters: dict, length: int) -> np.ndarray:
    """log P(published c | contributed s) as an (L + 1, L + 1) table, rows c, columns s."""
    with np.errstate(divide="ignore"):
        table = np.log(_mechanism(parameters, length) @ _padding(parameters, length))
    return np.where(np.isfinite(table), table, IMPOSSIBLE)


def log_likelihoods(columns: np.ndarray, counts: np.ndarray, window: int, parameters: dict) -> np.ndarray:
    """(n, k) log-likelihood of each user's published counts (n x W) if candidate column k (T x k) were theirs."""
    lengths = window_lengths(columns.shape[0], window)
    sums = np.rint(window_sums(columns, window)).astype(np.int64)  # (W, k)
    published = np.clip(counts, 0, lengths[None, :]).astype(np.int64)  # (n, W)
    scores = np.zeros((counts.shape[0], columns.shape[1]))
    tables = {int(length): count_table(parameters, int(length)) for length in np.unique(lengths)}
    for w, length in enumerate(lengths):
        scores += tables[int(length)][published[:, w][:, None], sums[w][None, :]]
    return scores


def assign(scores: np.ndarray) -> np.ndarray:
    """(n,) the candidate each user gets by maximum total likelihood, -1 where none is possible."""
    owner = np.full(scores.shape[0], -1)
    if scores.shape[1] == 0:
        return owner
    users, candidates = linear_sum_assignment(-scores)
    possible = scores[users, candidates] > IMPOSSIBLE / 2
    owner[users[possible]] = candidates[possible]
    return owner


def independent(columns: np.ndarray, order: np.ndarray, tolerance: float = 1e-8) -> np.ndarray:
    """Indices, in `order`, of columns that each raise the rank (Gram-Schmidt): a composite or repeated column never
    enters."""
    kept: list[int] = []
    basis = np.zeros((columns.shape[0], min(columns.shape[0], len(order))))
    for k in order:
        if len(kept) == basis.shape[1]:
            break
        column = columns[:, int(k)]
        done = basis[:, : len(kept)]
        outside = column - done @ (done.T @ column)
        outside -= done @ (done.T @ outside)  # twice is enough (Kahan)
        norm = float(np.linalg.norm(outside))
        if norm > tolerance * max(float(np.linalg.norm(column)), 1.0):
            basis[:, len(kept)] = outside / norm
            kept.append(int(k))
    return np.array(kept, dtype=np.int64)
