"""UA, RA and TA (Jia et al. 2023), in percent, with the class-wise variant and a per-class table."""

from dataclasses import dataclass

import numpy as np

from unlearning.audit.scores import FloatArray, IntArray, check_probs


def accuracy_pct(probs: FloatArray, labels: IntArray, *, split: str = "set") -> float:
    """Top-1 accuracy in percent; an empty set has no accuracy, so it is an error, not NaN."""
    p, y = check_probs(probs, labels)
    if len(y) == 0:
        raise ValueError(f"cannot compute the accuracy of an empty {split} set")
    return float(100.0 * np.mean(p.argmax(axis=1) == y))


@dataclass(frozen=True)
class Accuracies:
    """UA = 100 - acc(forget), RA = acc(retain), TA = acc(test), all in percent.

    Class-wise forgetting (`forget_class` set): TA is measured on the test images of the other
    classes and `forget_class_test_accuracy` on the forgotten class's own test images, since a model
    that truly forgot the class must fail on it while keeping the rest.
    """

    UA: float
    RA: float
    TA: float
    val_accuracy: float | None
    forget_class_test_accuracy: float | None


def compute_accuracies(
    forget: tuple[FloatArray, IntArray],
    retain: tuple[FloatArray, IntArray],
    test: tuple[FloatArray, IntArray],
    val: tuple[FloatArray, IntArray] | None = None,
    *,
    forget_class: int | None = None,
) -> Accuracies:
    """Each argument is a (probabilities N x C, labels N) pair."""
    test_probs, test_labels = test
    class_test_accuracy = None
    if forget_class is not None:
        in_class = test_labels == forget_class
        class_test_accuracy = (
            accuracy_pct(test_probs[in_class], test_labels[in_class], split="forgotten class test")
            if in_class.any()
            else None
        )
        test_probs, test_labels = test_probs[~in_class], test_labels[~in_class]
    return Accuracies(
        UA=100.0 - accuracy_pct(*forget, split="forget"),
        RA=accuracy_pct(*retain, split="retain"),
        TA=accuracy_pct(test_probs, test_labels, split="test"),
        val_accuracy=accuracy_pct(*val, split="val") if val is not None and len(val[1]) else None,
        forget_class_test_accuracy=class_test_accuracy,
    )


@dataclass(frozen=True)
class ClassAccuracy:
    """Accuracy in percent of one class on each split; None where the split has no sample of it."""

    class_index: int
    forget: float | None
    retain: float | None
    test: float | None


def per_class_accuracy(
    num_classes: int,
    forget: tuple[FloatArray, IntArray],
    retain: tuple[FloatArray, IntArray],
    test: tuple[FloatArray, IntArray],
) -> list[ClassAccuracy]:
    def class_accuracy(split: tuple[FloatArray, IntArray], c: int) -> float | None:
        probs, labels = split
        in_class = labels == c
        return accuracy_pct(probs[in_class], labels[in_class]) if in_class.any() else None

    return [
        ClassAccuracy(c, class_accuracy(forget, c), class_accuracy(retain, c), class_accuracy(test, c))
        for c in range(num_classes)
    ]
