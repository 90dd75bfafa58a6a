"""Machine unlearning (issue 17): forget sets, the classifier and its supervised baselines, Label-Agnostic
Forgetting (Shen et al., ICLR 2024) and the membership-inference evaluation.

* `forget`: class and random forget masks, padded per-member index lists, paired (D_r, D_f) batches.
* `classifier`: extractor + linear head, cross-entropy (original, retrain, fine-tune), NegGrad+, head-only updates.
* `laf`: the representation VAEs, the UE and RA losses, the LAF method with its alternating step.
* `evaluate`: accuracies by subset, the sorted-softmax logistic-regression MIA, the per-run evaluator.
"""

from gvlab.unlearning import classifier, evaluate, forget, laf

__all__ = ["classifier", "evaluate", "forget", "laf"]
