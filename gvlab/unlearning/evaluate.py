"""Evaluation of unlearning: accuracies by subset and a membership-inference attack (MIA).

MIA (Shen et al. 2024, `Train.py::train_attack_model` / `attack`): an attacker sees only the sorted softmax vector
of a model's output. It is trained to separate members (a sample of the remaining training data, `sample_data`)
from non-members (test data) and is then applied to the forget set: the fraction of D_f it calls "member" is what
unlearning should bring to the retrained model's value (the retrained model never saw D_f). The official attacker
is XGBoost; here it is logistic regression fitted in JAX (`gvlab.probe.fit_logistic`, L-BFGS, standardised
inputs), as the notes' mini-experiment prescribes. Besides the forget-set rate the attack reports its rate on
held-out test points (its false-positive rate: the floor a model that never saw D_f reaches when D_f looks like test
data) and the official number, the attacker's accuracy on D_f (label member) against as many held-out test points
(label non-member).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from gvlab import probe
from gvlab.unlearning.classifier import Classifier


def sorted_softmax(logits: Float[Array, "N C"]) -> Float[Array, "N C"]:
    """The attacker's features: softmax probabilities sorted ascending per row (`att_X.sort(axis=1)`), `[N, C]`."""
    return jnp.sort(jax.nn.softmax(logits, axis=-1), axis=-1)


def fit_attacker(members: Float[Array, "N1 F"], nonmembers: Float[Array, "N0 F"], l2: float = 1e-3,
                 steps: int = 100) -> probe.LogisticProbe:
    """Member (1) vs non-member (0) logistic regression on attack features `[N1, F]`, `[N0, F]`."""
    x = jnp.concatenate([members, nonmembers])
    y = jnp.concatenate([jnp.ones(members.shape[0], jnp.int32), jnp.zeros(nonmembers.shape[0], jnp.int32)])
    return probe.fit_logistic(x, y, num_classes=2, l2=l2, steps=steps)


def called_member(attacker: probe.LogisticProbe, features: Float[Array, "N F"]) -> Bool[Array, " N"]:
    """`bool [N]`: the rows the attacker calls members."""
    return probe.predict(attacker, features) == 1


def membership_attack(members: Float[Array, "N1 F"], nonmembers: Float[Array, "N0 F"], target: Float[Array, "T F"],
                      heldout: Float[Array, "H F"], l2: float = 1e-3, steps: int = 100) -> dict[str, jax.Array]:
    """Fit the attacker on `members` / `nonmembers` and attack `target` (the forget set) and `heldout` (unseen).

    Returns:
        `member_rate` (fraction of `target` called member), `heldout_rate` (fraction of `heldout` called member:
        the attacker's false-positive rate), `train_accuracy` (on its own training data) and `attack_accuracy`
        = (member_rate + 1 - heldout_rate) / 2, the official `Train.py::attack` accuracy of D_f (members) against
        an equal number of unseen points, in its class-balanced form.
    """
    attacker = fit_attacker(members, nonmembers, l2, steps)
    member_rate = jnp.mean(called_member(attacker, target))
    heldout_rate = jnp.mean(called_member(attacker, heldout))
    train_accuracy = 0.5 * (jnp.mean(called_member(attacker, members)) + 1.0
                            - jnp.mean(called_member(attacker, nonmembers)))
    return {"member_rate": member_rate, "heldout_rate": heldout_rate, "train_accuracy": train_accuracy,
            "attack_accuracy": 0.5 * (member_rate + 1.0 - heldout_rate)}


def masked_accuracy(logits: Float[Array, "N C"], labels: Int[Array, " N"], mask: Bool[Array, " N"]
                    ) -> Float[Array, ""]:
    """Accuracy over the rows where `mask` holds (NaN when none does)."""
    correct = (jnp.argmax(logits, -1) == labels) & mask
    count = jnp.sum(mask)
    return jnp.where(count > 0, jnp.sum(correct) / jnp.maximum(count, 1), jnp.nan)


def class_accuracies(logits: Float[Array, "N C"], labels: Int[Array, " N"], num_classes: int) -> Float[Array, " K"]:
    """`[C]`: test accuracy on each class."""
    return jax.vmap(lambda c: masked_accuracy(logits, labels, labels == c))(jnp.arange(num_classes))


def unlearning_metrics(inputs: dict, data: dict, key: jax.Array, *, classifier: Classifier,
                       mia_steps: int = 100) -> dict[str, jax.Array]:
    """A per-run evaluator (`run.evaluate`): accuracies by subset and the MIA for one run's forget set.

    Args:
        inputs: this run's `{"params": classifier params, "forget_mask": bool [N] over the training set,
            "forget_class": int (-1 for a random forget set), "mia_members": int [K] training indices (from D_r)
            the attacker learns as members}`.
        data: `{"x_train", "y_train", "x_test", "y_test"}`; the first K test rows train the attacker as
            non-members, the rest are its held-out points.
        key: unused (the metrics are deterministic).

    Returns:
        `train_remain`, `train_forget` (accuracy on D_r, D_f), `test`, `test_remain` (test rows not of the
        forgotten class; all rows for a random forget set), `test_forget` (rows of the forgotten class; NaN for a
        random forget set), and the MIA's `mia_forget` (D_f called member), `mia_heldout` (held-out test rows
        called member) and `mia_accuracy` (`membership_attack`'s attack accuracy).
    """
    del key
    params, forget = inputs["params"], inputs["forget_mask"]
    train_logits = classifier.logits(params, data["x_train"])
    test_logits = classifier.logits(params, data["x_test"])
    y_train, y_test = data["y_train"], data["y_test"]
    forget_class = inputs["forget_class"]
    test_forget = y_test == forget_class
    k = inputs["mia_members"].shape[0]
    features = sorted_softmax(train_logits)
    attacker = fit_attacker(features[inputs["mia_members"]], sorted_softmax(test_logits[:k]), steps=mia_steps)
    # Forget sets differ in size between members: call every training row, then average over this run's mask.
    forget_rate = jnp.sum(called_member(attacker, features) & forget) / jnp.sum(forget)
    heldout_rate = jnp.mean(called_member(attacker, sorted_softmax(test_logits[k:])))
    return {
        "train_remain": masked_accuracy(train_logits, y_train, ~forget),
        "train_forget": masked_accuracy(train_logits, y_train, forget),
        "test": masked_accuracy(test_logits, y_test, jnp.ones_like(test_forget)),
        "test_remain": masked_accuracy(test_logits, y_test, ~test_forget),
        "test_forget": masked_accuracy(test_logits, y_test, test_forget),
        "mia_forget": forget_rate,
        "mia_heldout": heldout_rate,
        "mia_accuracy": 0.5 * (forget_rate + 1.0 - heldout_rate),
    }
