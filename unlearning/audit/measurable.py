"""The one wording for a figure that the audited sets are too small to give: the figure is None and its
`reason` field says what it needs and what it has, never NaN and never an exception (a one-sample
deletion request is the everyday case, and its report must still be written)."""


def not_measurable(needs: str, has: int) -> str:
    """`not_measurable("at least 2 test samples", 1)` -> 'not measurable: needs at least 2 test samples,
    has 1'."""
    return f"not measurable: needs {needs}, has {has}"
