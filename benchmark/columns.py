"""The columns of the results table, in order: the contract between scoring and the leaderboard."""

ID_COLUMNS = (
    "defense",
    "suite",
    "scenario",
    "seed",
    "n_users",
    "n_rounds",
    "window",
    "participation",
)

SCORE_COLUMNS = (
    "exact_column_rate",
    "entry_accuracy",
    "update_cosine",
    "psnr_recovered",
    "psnr_aggregate",
    "ssim_recovered",
    "ssim_aggregate",
    "label_accuracy_recovered",
    "label_accuracy_aggregate",
    "test_accuracy",
    "epsilon",
    "attack_seconds",
)

RESULT_COLUMNS = ID_COLUMNS + SCORE_COLUMNS + ("status",)

# Columns that measure the machine, not the defense: kept in results, never ranked, hashed or compared.
WALL_CLOCK_COLUMNS = ("attack_seconds", "task_seconds")
