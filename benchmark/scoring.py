"""Scores of one task: compares what the attack produced with the ground truth. Never runs an attack.

Every inference quantity is scored three times: on the recovered updates (`*_recovered`), on the
true updates (`*_ceiling`, the same inference code run by an oracle that knew each update) and on
the round sums alone (`*_aggregate`, the floor secure aggregation leaves); its share says where the
attack lands between floor and ceiling.
"""

import math

import numpy as np
import pandas as pd

from scipy.optimize import linear_sum_assignment

from attacks.disaggregation import Disaggregation, least_squares
from attacks.pipeline import AttackOutput, Inference
from attacks.recovery import Recovery, named_recovery
from attacks.properties import PropertyGuess, holds_property
from benchmark.metrics import (
    AUC_CHANCE,
    label_accuracy,
    lpips,
    lpips_unavailable,
    majority_share,
    match_batch,
    property_accuracy,
    property_auc,
    psnr,
    ssim,
)
from benchmark.simulation import GroundTruth

DELTA = 1e-5  # the delta of every reported (epsilon, delta) guarantee
QUANTITIES = ("psnr", "ssim", "label_accuracy", "property_auc", "property_accuracy")
SHARE_COLUMNS = {
    "psnr": "psnr_share",
    "ssim": "ssim_share",
    "label_accuracy": "label_share",
    "property_auc": "property_share",
    "property_accuracy": "property_accuracy_share",
}
EQUAL = 1e-9  # ceiling and floor closer than this count as equal
SUCCESS_COSINE = 0.95  # a recovered update this close to the true one counts as that user's update


def share(recovered: float, floor: float, ceiling: float) -> float:
    """(recovered - floor) / (ceiling - floor), clipped to [0, 1]: 0 at the aggregate-only floor, 1 at the ceiling.

    Clipped because a narrow range would blow noise up (0.1 against a floor of 0.95 and a ceiling
    of 1.0 is -17): below the floor disaggregation gained nothing, and the raw columns keep the rest.
    When ceiling equals floor there is no range: 1.0 if recovered reaches the ceiling, else 0.0.
    NaN when a side is NaN (nothing to score, e.g. synthetic updates) and when the ceiling lies below the floor:
    the true updates reveal less than the round sums (weights a server designed to tell users apart invert to
    5.5 dB against 6.3 dB from the sums), so there is no gain to take a share of; the formula gave 1.0 there to an
    attack that recovered every update (and more the further below the floor it landed), which read as a full leak.
    """
    if any(math.isnan(value) for value in (recovered, floor, ceiling)) or ceiling < floor - EQUAL:
        return math.nan
    if abs(ceiling - floor) <= EQUAL:
        return 1.0 if recovered >= ceiling - EQUAL else 0.0
    return min(max((recovered - floor) / (ceiling - floor), 0.0), 1.0)


def _cosines(recovered: np.ndarray, true: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(recovered, axis=1) * np.linalg.norm(true, axis=1)
    dots = np.einsum("ij,ij->i", recovered, true)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)


def _cosine_matrix(recovered: np.ndarray, true: np.ndarray) -> np.ndarray:
    """(k, n) cosine of every recovered update with every true one (0 where either is zero)."""
    norms = np.linalg.norm(recovered, axis=1)[:, None] * np.linalg.norm(true, axis=1)[None, :]
    return np.where(norms > 0, recovered @ true.T / np.where(norms > 0, norms, 1.0), 0.0)


def match_updates(recovered: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n,) the recovered update matched to each true one (-1: none) and their cosine (NaN: none), one-to-one.

    Hungarian, so one recovered vector never counts for two users: the most pairs at SUCCESS_COSINE or above, then
    the largest total cosine (maximizing the total alone had paired 0.96 and 0.955 matches away, one success of two).
    """
    owner, cosine = np.full(len(true), -1), np.full(len(true), np.nan)
    if len(recovered) == 0:
        return owner, cosine
    matrix = _cosine_matrix(recovered, true)
    bonus = 2.0 * min(matrix.shape) + 1.0  # more than any difference of total cosine
    rows, cols = linear_sum_assignment(-(matrix + bonus * (matrix >= SUCCESS_COSINE)))
    owner[cols], cosine[cols] = rows, matrix[rows, cols]
    return owner, cosine


def _group_of(recovery: Recovery | None, n_users: int) -> np.ndarray:
    """Each user's group index: the public groups when the recovered updates are group sums, else themselves."""
    if recovery is None or recovery.groups is None:
        return np.arange(n_users)
    return np.unique(recovery.groups, return_inverse=True)[1]


def _vector_of_user(recovery: Recovery, truth: GroundTruth) -> np.ndarray:
    """(n,) which recovered update each user's inversion is scored from (-1: none): updates matched to the
    users' (or their groups') true updates, one-to-one by cosine."""
    group = _group_of(recovery, len(truth.updates))
    targets = np.zeros((group.max() + 1, truth.updates.shape[1]))
    np.add.at(targets, group, truth.updates)
    owner, _ = match_updates(recovery.updates, targets)
    return owner[group]


def _rows(vector: np.ndarray, inverted: np.ndarray) -> np.ndarray:
    """(n,) each user's row among the inverted updates (`inverted`: the index of each row's update): -1 where
    its update was not inverted (or none is the user's)."""
    row_of = {int(index): row for row, index in enumerate(inverted)}
    return np.array([row_of.get(int(v), -1) for v in vector], dtype=np.int64)


def _inverted_row_of_user(output: AttackOutput, truth: GroundTruth) -> np.ndarray:
    return _rows(_vector_of_user(output.recovery, truth), output.recovered.indices)


def scored_users(output: AttackOutput, truth: GroundTruth) -> np.ndarray:
    """The users, ascending, whose matched recovered update the attack inverted: the ones the ceiling must invert
    too, so that recovered and ceiling are scored on the same users."""
    return np.flatnonzero(_inverted_row_of_user(output, truth) >= 0)


def first_reconstructions(output: AttackOutput, truth: GroundTruth) -> np.ndarray:
    """(n, C, H, W) for pictures: the first reconstruction from the update matched to each user; NaN (blank) where
    no update was recovered for the user, or it was not among those inverted."""
    vector = _inverted_row_of_user(output, truth)
    pictures = np.full(truth.images[:, 0].shape, np.nan)
    pictures[vector >= 0] = output.recovered.images[vector[vector >= 0], 0]
    return pictures


def _property_scores(guess: PropertyGuess, has: np.ndarray) -> dict[str, float]:
    return {
        "property_auc": property_auc(guess.scores, has, guess.predictions),
        "property_accuracy": property_accuracy(guess.predictions, has),
    }


def _user_scores(
    inference: Inference, truth: GroundTruth, has: np.ndarray, vector: np.ndarray, group: np.ndarray
) -> dict[str, float]:
    """Per-user quantities averaged over the users that have an inverted update (NaN when none has).

    User u's reconstructions come from row `vector[u]` of the inference and are scored against its group's batch
    (its own batch without groups); image scores are first averaged over the batch.
    """
    psnrs, ssims, labels = [], [], []
    for user in np.flatnonzero(vector >= 0):
        members = np.flatnonzero(group == group[user])
        true_images = truth.images[members].reshape(-1, *truth.images.shape[2:])
        reconstructed, true = match_batch(inference.images[vector[user]], true_images)
        psnrs.append(float(psnr(reconstructed, true).mean()))
        ssims.append(float(ssim(reconstructed, true).mean()))
        labels.append(label_accuracy(inference.labels[vector[user]], truth.labels[members].reshape(-1)))
    mean = (lambda values: float(np.mean(values)) if values else math.nan)
    return {
        "psnr": mean(psnrs),
        "ssim": mean(ssims),
        "label_accuracy": mean(labels),
        **_property_scores(inference.property, has),
    }


def _aggregate_scores(output: AttackOutput, truth: GroundTruth, has: np.ndarray) -> dict[str, float]:
    """The floor: each round's reconstruction scored against its best-matching participant's images."""
    owners, reconstructed, true, labels = [], [], [], []
    for index, t in enumerate(output.aggregate_rounds):
        members = np.flatnonzero(truth.participants[t])
        if len(members) == 0:
            continue
        for user in members:
            matched, images = match_batch(output.aggregate_images[index], truth.images[user])
            owners.append(index)
            reconstructed.append(matched)
            true.append(images)
        labels.append(label_accuracy(output.aggregate_labels[index], truth.labels[members].reshape(-1)))
    scores = {"psnr": math.nan, "ssim": math.nan, "label_accuracy": math.nan, **_property_scores(output.aggregate_property, has)}
    if not owners:
        return scores
    reconstructed, true = np.stack(reconstructed), np.stack(true)
    shape = reconstructed.shape
    flat = (reconstructed.reshape(-1, *shape[2:]), true.reshape(-1, *shape[2:]))
    frame = pd.DataFrame({
        "round": owners,
        "psnr": psnr(*flat).reshape(shape[:2]).mean(axis=1),
        "ssim": ssim(*flat).reshape(shape[:2]).mean(axis=1),
    })
    best = frame.loc[frame.groupby("round")["psnr"].idxmax()]
    return {**scores, "psnr": float(best["psnr"].mean()), "ssim": float(best["ssim"].mean()), "label_accuracy": float(np.mean(labels))}


def _lpips(output: AttackOutput, truth: GroundTruth) -> str:
    """Mean LPIPS of the recovered reconstructions (users with an inverted update, their own batch), as text so
    the column keeps one type on every machine, or "not computed: <reason>" where the backbone's weights are not
    on disk (nothing is ever downloaded)."""
    if not len(truth.images):
        return "not computed: no images (synthetic updates)"
    if output.recovery.groups is not None:
        return "not computed: group sums are inverted as batches"
    vector = _inverted_row_of_user(output, truth)
    users = np.flatnonzero(vector >= 0)
    if not len(users):
        return "not computed: no recovered update inverted"
    reason = lpips_unavailable()
    if reason is not None:
        return f"not computed: {reason}"
    pairs = [match_batch(output.recovered.images[vector[user]], truth.images[user]) for user in users]
    reconstructed, true = (np.concatenate([pair[k] for pair in pairs]) for k in (0, 1))
    return f"{float(lpips(reconstructed, true).mean()):.6g}"


def score_recovery(recovery: Recovery, truth: GroundTruth) -> dict[str, float]:
    """How much one attack recovered: the columns that pick the strongest attack on a task.

    `attack_success`: share of users whose own update is among the attack's recovered updates, named
    or not (matched one-to-one by cosine, at least SUCCESS_COSINE): what the users lost.
    `attributed_success`: the same with the right name (the user's column exact on every round the attack
    claims it for, and its named update within SUCCESS_COSINE), always counted as recovered;
    `anonymous_success`: recovered but not attributed.
    An exact column alone is not enough: under fixed groups, or noise, a user's column can be right
    while only a group sum, or a noisy estimate, comes out.
    The three shares count users who took part in some round: one who never did has no update in the sums to
    lose, and counting them as protected would credit the defense with the scenario's chance (NaN where nobody
    took part).
    """
    named = recovery.disaggregation
    columns_exact = (named.participants == truth.participants).all(axis=0)
    claimed = slice(recovery.claimed_rounds)  # a prefix attempt names users by their first rounds only
    claimed_exact = (named.participants[claimed] == truth.participants[claimed]).all(axis=0)
    cosines = _cosines(named.updates, truth.updates)
    attributed = claimed_exact & (cosines >= SUCCESS_COSINE)
    _, matched = match_updates(recovery.updates, truth.updates)
    # A user attributed its own update has lost it even when the one-to-one matching gave that vector to
    # another user (members of a fixed group with near-identical updates share one group mean).
    recovered = (np.nan_to_num(matched, nan=-1.0) >= SUCCESS_COSINE) | attributed
    took_part = truth.participants.any(axis=0)
    share = (lambda users: float(users[took_part].mean()) if took_part.any() else math.nan)
    # Per user who took part, as the shares: a non-participant's empty column is "exact" and its zero entries
    # "recovered" whatever the attack did. The entries of an attack that names nobody are no recovered matrix
    # (its zeros scored 1 - participation); a user's cosine is its named update's or, unnamed, its matched one's.
    names_anyone = bool(named.participants.any())
    return {
        "attack_success": share(recovered),
        "attributed_success": share(attributed),
        "anonymous_success": share(recovered & ~attributed),
        "exact_column_rate": share(columns_exact),
        "entry_accuracy": share((named.participants == truth.participants).mean(axis=0)) if names_anyone else math.nan,
        "update_cosine": share(np.maximum(cosines, np.nan_to_num(matched, nan=0.0))),
        "unique_rate": share(np.array([status == "unique" for status in named.status])),
        "attack_seconds": named.wall_seconds,
    }


def success_ceiling(aggregates: np.ndarray, truth: GroundTruth) -> float:
    """`attack_success_ceiling`: attack_success of least squares from the *true* participant matrix, scored as an
    attack is (one update per distinct column, matched one-to-one). A defense whose noise keeps even this at 0
    protects updates whatever the attack (ldp-gaussian(z=0.01) on a designed LeNet: 0.923 median cosine, 0); an
    attack_success below it is the attack's shortfall. It is not a bound where users are not identifiable: under
    fixed groups another participant matrix fits the sums as well, and its updates can match more users by chance."""
    n_users = truth.participants.shape[1]
    oracle = Disaggregation(truth.participants, least_squares(truth.participants.astype(np.float64), aggregates),
                            ("unique",) * n_users, np.zeros(n_users), np.zeros(n_users), rank=0, wall_seconds=0.0)
    return score_recovery(named_recovery("static", oracle, None), truth)["attack_success"]


def no_inference(reason: str) -> dict[str, float | str]:
    """The inference columns of a task that ran no inversion: NaN, and `reason` in the text column."""
    columns = [f"{quantity}_{side}" for quantity in QUANTITIES for side in ("recovered", "ceiling", "aggregate")]
    return {**dict.fromkeys([*columns, *SHARE_COLUMNS.values(), "property_auc_chance", "property_accuracy_chance"], math.nan),
            "lpips": f"not computed: {reason}"}


def score(output: AttackOutput, truth: GroundTruth, ceiling: Inference,
          recovery_scores: dict[str, float] | None = None) -> dict[str, float | str]:
    """The score columns of the results table for one attack output on one (defense, scenario, seed).

    `ceiling` is the oracle's inference on the true updates (attacks.pipeline.infer_users on the truth);
    `recovery_scores`: score_recovery of output.recovery where the caller has it (it matches every update).
    """
    scores: dict[str, float | str] = {
        **(recovery_scores if recovery_scores is not None else score_recovery(output.recovery, truth)),
        "property_auc_chance": math.nan,
        "property_accuracy_chance": math.nan,
    }
    sides = {side: dict.fromkeys(QUANTITIES, math.nan) for side in ("recovered", "ceiling", "aggregate")}
    if len(truth.images):
        has = holds_property(truth.labels, output.n_classes)
        everyone = np.arange(len(truth.images))
        sides = {
            "recovered": _user_scores(
                output.recovered, truth, has, _inverted_row_of_user(output, truth), _group_of(output.recovery, len(everyone))
            ),
            "ceiling": _user_scores(ceiling, truth, has, _rows(everyone, ceiling.indices), everyone),
            "aggregate": _aggregate_scores(output, truth, has),
        }
        scores["property_auc_chance"] = AUC_CHANCE
        scores["property_accuracy_chance"] = majority_share(has)
    for quantity in QUANTITIES:
        for side, values in sides.items():
            scores[f"{quantity}_{side}"] = values[quantity]
        scores[SHARE_COLUMNS[quantity]] = share(
            sides["recovered"][quantity], sides["aggregate"][quantity], sides["ceiling"][quantity]
        )
    scores["lpips"] = _lpips(output, truth)
    return scores
