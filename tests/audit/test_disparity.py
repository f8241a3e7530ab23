"""Avg. Disparity against a reference, by hand."""

import pytest

from unlearning.audit.disparity import avg_disparity, metric_distances

UNLEARNED = {"UA": 10.0, "MIA": 20.0, "RA": 95.0, "TA": 80.0}
RETRAINED = {"UA": 12.0, "MIA": 26.0, "RA": 94.0, "TA": 83.0}


def test_distances_and_their_mean() -> None:
    assert metric_distances(UNLEARNED, RETRAINED) == {"UA": 2.0, "MIA": 6.0, "RA": 1.0, "TA": 3.0}
    assert avg_disparity(UNLEARNED, RETRAINED) == pytest.approx((2 + 6 + 1 + 3) / 4)
    assert avg_disparity(RETRAINED, RETRAINED) == 0.0


def test_missing_metric_is_named() -> None:
    with pytest.raises(KeyError, match="MIA"):
        avg_disparity({"UA": 1.0, "RA": 1.0, "TA": 1.0}, RETRAINED)
