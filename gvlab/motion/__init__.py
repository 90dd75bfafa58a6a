"""Motion forecasting: the trajectory batch format, GCRL and its CVAE baseline.

The trajectory batch (shared by every motion model, loader and metric in gvlab) is a dict:

- `past`: `[B, 8, 2]` float32, the focal agent's 8 observed positions (0.4 s apart), in metres, translated so the
  last observed position `past[:, -1]` is the origin (no rotation);
- `future`: `[B, 12, 2]` float32, its next 12 positions in the same frame;
- `neighbours`: `Padded(values [B, N, 8, 2], mask [B, N])` (gvlab.data.padded), the other agents' observed
  positions over the same 8 steps in the same frame (relative to the focal agent's last observed position), padded
  to N agents; `mask` True on real agents (which come first). Models reduce over agents only through the masked
  functions of gvlab.data.padded, so padding never changes a loss;
- `env`: `[B]` int32, the environment (scene or shift) index of each example.

Every agent of a scene can be a focal agent: a scene with A agents gives A examples, each with the A-1 others as
neighbours. Predictions are `[K, B, 12, 2]` (K samples per example) in the same frame; minADE/minFDE live in
`gvlab.motion.metrics`.
"""
