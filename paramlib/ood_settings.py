"""The out-of-distribution score's names and defaults, shared by the score
(`paramlib.models.ood`) and its command (``paramlib ood calibrate``, `paramlib.couple.ood`);
torch-free, so that the command line is built without importing torch."""

COMPONENTS = ("mahalanobis", "beyond_range", "spread")
# The spread is left out by default: on the medium testbed's historical validation columns a
# large spread marks the strongly convecting columns, where the ensemble is least sure but
# still far better than Betts-Miller (AUC 0.03-0.07 for "model error above Betts-Miller's"),
# so falling back on it made the hybrid worse (column heating error 36-45 W m-2 against 29-31
# without it, the model alone 28-30). docs/gcm-coupling.md has the numbers.
DEFAULT_COMPONENTS = ("mahalanobis", "beyond_range")
OUTPUT_NAME = "ood_score"
DEFAULT_RATE = 0.05
DEFAULT_TOLERANCE = 0.5  # training standard deviations beyond the range
DEFAULT_EIG_FLOOR = 1.0e-3  # of the mean eigenvalue
# Where `paramlib couple study` sets its hybrid's threshold: the historical ml run's own scores
# (`paramlib ood calibrate --host-output`) or the offline validation split.
THRESHOLD_SOURCES = ("host", "val")
