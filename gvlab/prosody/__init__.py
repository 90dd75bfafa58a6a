"""Prosody with a capacity-constrained variational embedding (Capacitron, Battenberg et al. 2019).

`model`: the method (text + reference mel -> z -> mel frames; reconstruction + beta (KL - C) with the multiplier
updated by dual ascent in `TrainState.extra`, see `gvlab.capacity`). `measure`: pitch and rate estimators on
log-mel features (linear read-outs fitted on real espeak-ng utterances) and the transfer / prior-sample metrics.
"""
