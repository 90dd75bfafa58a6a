"""ETH/UCY pedestrian trajectories: raw `frame id x y` files from a folder the user gives, cut into 8+12-step windows.

Files and checksums. The eight raw files of Trajectron++'s `experiments/pedestrians/raw/raw/all_data` (commit
1031c7b), byte-identical to Social GAN's and GCRL's `datasets/*/`: one row per observation, metres, frames 10 apart
(0.4 s; eth's file is the 10-frame interpolation of the original 6-frame annotation, Trajectron++ issue #67).
`checked_files` verifies each file's SHA-256 before anything is read. The files are never shipped with gvlab.

Protocol (the one of Social GAN / STGAT / GCRL and Trajectron++, with what differs stated):

* Scenes: eth = biwi_eth, hotel = biwi_hotel, univ = students001 + students003, zara1 = crowds_zara01,
  zara2 = crowds_zara02. Leave one scene out: test on the held-out scene's files, train on every other file,
  including the two training-only files uni_examples (environment univ) and crowds_zara03 (environment zara2). The
  file -> environment map is GCRL's `utils.py::get_envs_path`; the folders `datasets/<scene>/{train,val,test}` of
  Social GAN and Trajectron++ hold exactly these files.
* Train/validation: each training file is cut at one frame (`VAL_START_FRAME`, read off Trajectron++'s
  `raw/raw/{train,val}` files, whose rows add up to the whole file): earlier frames train, later ones validate.
* Windows: 8 observed + 12 predicted steps, a window starting at every annotated frame (stride 1 frame,
  Social GAN's `skip=1`). Only agents present at all 20 steps are predicted ("focal" agents). Each focal agent is
  one example; its neighbours are the other agents present at all observed steps (`neighbours="observed"`) or at
  all 20 steps (`"full"`, the Social GAN/GCRL loader, where only complete agents enter a sequence at all).
  `min_agents` drops windows with fewer focal agents: Social GAN's `TrajectoryDataset` (and GCRL's copy,
  `trajectories.py`) keeps a window only if it has more than `min_ped=1` complete agents, i.e. `min_agents=2`;
  Trajectron++ keeps single agents (`min_agents=1`).
* Steps are consecutive frames (`frame_step` apart). Social GAN instead steps through the file's list of annotated
  frames, so a window may jump over a stretch of frames where nobody is annotated; this loader does not join
  across such gaps (the counts below differ by the windows that straddle a gap).
* Short histories: a once widely copied preprocessing (Trajectron++'s ETH/UCY evaluation before its fix, issue
  #10, May 2020) also predicted agents with fewer than 8 observed steps (padding the missing ones), which changed
  the published minADE/minFDE; together with its velocity preprocessing that read two future positions (issues #26,
  #40, #53) its ETH numbers moved from 0.43/0.86 to 0.67/1.18. Only complete 20-step agents are used here.

Output: the trajectory batch of `gvlab.motion` (`past` [B, 8, 2], `future` [B, 12, 2] translated so the last
observed position is the origin, `neighbours` = `Padded([B, N, 8, 2], [B, N])` in the same frame, `env` [B] int32
= index in `SCENES`), plus bookkeeping (`origin`, `frame`, `agent`) for plots and checks.

    >>> rows = np.array([[f, 1, 0.1 * f, 0.0] for f in range(0, 200, 10)] + [[0, 2, 5.0, 5.0]], float)
    >>> w = windows(rows, env=0)
    >>> w.past.shape, w.future.shape, w.neighbours.mask.shape, float(w.future[0, -1, 0])
    ((1, 8, 2), (1, 12, 2), (1, 1), 12.0)
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from gvlab.data.external import DataError, checked_files
from gvlab.data.padded import Padded
from gvlab.errors import ConfigError

SCENES = ("eth", "hotel", "univ", "zara1", "zara2")
FILE_SCENE = {"biwi_eth.txt": "eth", "biwi_hotel.txt": "hotel", "students001.txt": "univ",
              "students003.txt": "univ", "uni_examples.txt": "univ", "crowds_zara01.txt": "zara1",
              "crowds_zara02.txt": "zara2", "crowds_zara03.txt": "zara2"}
TEST_FILES = {"eth": ("biwi_eth.txt",), "hotel": ("biwi_hotel.txt",), "univ": ("students001.txt", "students003.txt"),
              "zara1": ("crowds_zara01.txt",), "zara2": ("crowds_zara02.txt",)}
SHA256 = {
    "biwi_eth.txt": "cf8d3fd342a15f409ebc2a1fc76b91a0f06390bd21f1e11410f3859331ab082b",
    "biwi_hotel.txt": "9caa771bb9153d6b809dd0916b6f86761b641e6bbb15e766c1de3133fbbb7fcf",
    "crowds_zara01.txt": "1147a1962a09abfb86f28c6cddcac862e095a0cf129b3016385b69eacdd09d85",
    "crowds_zara02.txt": "8a649d0f8c9ae75c87c4d23a85f892786b0aa30266e996c7be03e69dafff22ff",
    "crowds_zara03.txt": "16b3e899932c4baacd07f45013d5b921f90bc5a29eb2b0fe42f4d7c904ac3108",
    "students001.txt": "a6d87f278d94136fe39b8be91555487a29ac77259ae403b9dba2d5c18caf7b5b",
    "students003.txt": "e25798b660634330aa89f8bb259425de720e84d0873902726c1d1f4ccff21d6c",
    "uni_examples.txt": "61f432c0ab3070ed0ef150fbeabcd7baf839cab5495a46e6105bd747f0a092a7",
}
# First validation frame of each file: Trajectron++ raw/raw/val/<file>_val.txt @1031c7b (train = earlier frames).
VAL_START_FRAME = {"biwi_eth.txt": 10240, "biwi_hotel.txt": 14400, "crowds_zara01.txt": 7110,
                   "crowds_zara02.txt": 8420, "crowds_zara03.txt": 6030, "students001.txt": 3550,
                   "students003.txt": 4320, "uni_examples.txt": 5940}
SPLITS = ("train", "val", "test")


class Windows(NamedTuple):
    """Examples cut from raw rows: the trajectory batch (`batch()`) plus where each example came from."""

    past: np.ndarray        # [B, obs, 2] float32, relative to origin
    future: np.ndarray      # [B, pred, 2] float32, relative to origin
    neighbours: Padded      # values [B, N, obs, 2] float32 relative to origin, mask [B, N]
    env: np.ndarray         # [B] int32, index in SCENES
    origin: np.ndarray      # [B, 2] float64, the focal agent's last observed position in world metres
    frame: np.ndarray       # [B] int64, the window's first frame
    agent: np.ndarray       # [B] int64, the focal agent's id in its file
    sequence: np.ndarray    # [B] int64, the window (scene at one time) the example belongs to, unique in the set

    def batch(self) -> dict:
        """The `gvlab.motion` trajectory batch: past, future, neighbours, env."""
        return {"past": self.past, "future": self.future, "neighbours": self.neighbours, "env": self.env}


def read_file(path: str | os.PathLike) -> np.ndarray:
    """Rows `[frame, id, x, y]` (float64) of one raw file, sorted by frame then id; bad rows are a DataError."""
    try:
        rows = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as error:
        raise DataError(f"{path}: not a whitespace-separated `frame id x y` file ({error})") from error
    if rows.shape[1] != 4 or not np.all(np.isfinite(rows)):
        raise DataError(f"{path}: expected 4 finite columns `frame id x y`, got shape {rows.shape}")
    return rows[np.lexsort((rows[:, 1], rows[:, 0]))]


def _grid(rows: np.ndarray, frame_step: int) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Positions on a (agent, time) grid: `[A, T, 2]` with NaN where an agent is absent; agent ids; first frame."""
    frames = rows[:, 0].astype(np.int64)
    if np.any(frames != rows[:, 0]) or np.any((frames - frames.min()) % frame_step):
        raise DataError(f"frames must be integers {frame_step} apart; got e.g. {rows[:3, 0].tolist()}")
    first = int(frames.min())
    time = (frames - first) // frame_step
    agents, agent_index = np.unique(rows[:, 1].astype(np.int64), return_inverse=True)
    positions = np.full((len(agents), int(time.max()) + 1, 2), np.nan)
    if len(np.unique(agent_index * (time.max() + 1) + time)) != len(rows):
        raise DataError("an agent has two rows at the same frame")
    positions[agent_index, time] = rows[:, 2:4]
    return positions, agents, first, np.unique(time)


def _complete(present: np.ndarray, length: int) -> np.ndarray:
    """`[A, T]` bool: agent a present at every step of the window of `length` steps starting at t."""
    counts = np.concatenate([np.zeros((present.shape[0], 1), np.int64), np.cumsum(present, axis=1)], axis=1)
    full = np.zeros_like(present)
    span = present.shape[1] - length + 1
    if span > 0:
        full[:, :span] = counts[:, length:length + span] - counts[:, :span] == length
    return full


def windows(rows: np.ndarray, env: int, obs_len: int = 8, pred_len: int = 12, stride: int = 1,
            frame_step: int = 10, neighbours: str = "observed", min_agents: int = 1,
            max_neighbours: int | None = None) -> Windows:
    """Cut one file's rows into examples: every complete agent of every window, with its neighbours.

    Args:
        rows: `[R, 4]` `frame id x y` (`read_file`).
        env: the environment index given to every example.
        obs_len, pred_len: observed and predicted steps (8 and 12 by convention).
        stride: windows start at every `stride`-th annotated frame (1: every frame, the convention).
        frame_step: frame-number difference between consecutive steps (10 in these files).
        neighbours: "observed" (present at all observed steps) or "full" (at all steps).
        min_agents: keep a window only if it has at least this many complete agents (Social GAN: 2).
        max_neighbours: pad to this many neighbours, keeping the nearest at the last observed step when there are
            more (None: as many as the largest window has). Neighbours are always ordered nearest first.
    """
    if neighbours not in ("observed", "full"):
        raise ConfigError(f"neighbours must be 'observed' or 'full', got {neighbours!r}")
    if min(obs_len, pred_len, stride, frame_step, min_agents) < 1:
        raise ConfigError("obs_len, pred_len, stride, frame_step and min_agents must be >= 1")
    positions, agent_ids, first, starts = _grid(rows, frame_step)
    length = obs_len + pred_len
    present = ~np.isnan(positions[..., 0])
    focal_ok = _complete(present, length)
    neighbour_ok = focal_ok if neighbours == "full" else _complete(present, obs_len)
    parts = []
    for index, start in enumerate(starts[::stride]):
        focal = np.flatnonzero(focal_ok[:, start])
        if len(focal) < min_agents:
            continue
        window = positions[:, start:start + length]
        others = np.flatnonzero(neighbour_ok[:, start])
        origin = window[focal, obs_len - 1]  # [F, 2]
        relative = window[others, :obs_len][None] - origin[:, None, None]  # [F, M, obs, 2]
        real = others[None, :] != focal[:, None]
        # nearest first (at the last observed step), padding last: the cap keeps the nearest ones
        distance = np.where(real, np.linalg.norm(relative[:, :, -1], axis=-1), np.inf)
        order = np.argsort(distance, axis=1, kind="stable")
        parts.append((window[focal] - origin[:, None], np.take_along_axis(relative, order[..., None, None], 1),
                      np.take_along_axis(real, order, 1), origin, np.full(len(focal), first + start * frame_step),
                      agent_ids[focal], np.full(len(focal), index)))
    count = sum(len(p[0]) for p in parts)
    most = max([int(p[2].sum(1).max()) for p in parts if p[2].size] + [0])
    size = max(1, most if max_neighbours is None else max_neighbours)
    values, mask = np.zeros((count, size, obs_len, 2), np.float32), np.zeros((count, size), bool)
    row = 0
    for _, relative, real, *_ in parts:
        width = min(size, relative.shape[1])
        values[row:row + len(real), :width] = np.where(real[..., None, None], relative, 0.0)[:, :width]
        mask[row:row + len(real), :width] = real[:, :width]
        row += len(real)
    empty = (np.zeros((0, length, 2)), None, None, np.zeros((0, 2)), *[np.zeros(0, np.int64)] * 3)
    track, origin, frame, agent, sequence = (np.concatenate([p[i] for p in parts] + [empty[i]])
                                             for i in (0, 3, 4, 5, 6))
    return Windows(past=track[:, :obs_len].astype(np.float32), future=track[:, obs_len:].astype(np.float32),
                   neighbours=Padded(values, mask), env=np.full(count, env, np.int32), origin=origin,
                   frame=frame.astype(np.int64), agent=agent.astype(np.int64), sequence=sequence.astype(np.int64))


def concatenate(parts: list[Windows], max_neighbours: int | None = None) -> Windows:
    """Join windows from several files into one set, re-padding neighbours to a common N."""
    if not parts:
        raise ConfigError("concatenate needs at least one set of windows")
    size = max([p.neighbours.mask.shape[1] for p in parts] + [max_neighbours or 0])

    def widen(p: Windows) -> Padded:
        extra = size - p.neighbours.mask.shape[1]
        return Padded(np.pad(p.neighbours.values, ((0, 0), (0, extra), (0, 0), (0, 0))),
                      np.pad(p.neighbours.mask, ((0, 0), (0, extra))))

    wide = [widen(p) for p in parts]
    offsets = np.cumsum([0] + [int(p.sequence.max()) + 1 if len(p.sequence) else 0 for p in parts[:-1]])
    return Windows(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("past", "future")),
                   Padded(np.concatenate([w.values for w in wide]), np.concatenate([w.mask for w in wide])),
                   *(np.concatenate([getattr(p, f) for p in parts]) for f in ("env", "origin", "frame", "agent")),
                   np.concatenate([p.sequence + o for p, o in zip(parts, offsets)]))


def group_by_sequence(sequence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Examples grouped by window, for scene-level metrics: `(index [S, A], mask [S, A])`, A the largest group.

    `index[s, a]` is the a-th example of the s-th window (0 where `mask` is False), e.g. for
    `gvlab.motion.metrics.joint_min_ade_fde(samples[:, index], truth[index], mask)`.
    """
    _, group, counts = np.unique(np.asarray(sequence), return_inverse=True, return_counts=True)
    order = np.argsort(group, kind="stable")
    rank = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    index = np.zeros((len(counts), int(counts.max()) if len(counts) else 1), np.int64)
    mask = np.zeros(index.shape, bool)
    index[group[order], rank], mask[group[order], rank] = order, True
    return index, mask


def split_files(held_out: str, split: str) -> tuple[str, ...]:
    """The files a leave-one-scene-out split reads: the held-out scene's test files, or every other file."""
    if held_out not in SCENES or split not in SPLITS:
        raise ConfigError(f"held_out must be one of {SCENES} and split one of {SPLITS}; got {held_out!r}, {split!r}")
    if split == "test":
        return TEST_FILES[held_out]
    return tuple(f for f, scene in FILE_SCENE.items() if scene != held_out)


def load(data_dir: str | os.PathLike | None, held_out: str, split: str, **window_options) -> Windows:
    """The windows of one leave-one-scene-out split, read from the user's folder after the checksum check.

    Args:
        data_dir: the folder of the raw files (None: `$GVLAB_DATA_DIR`).
        held_out: the test scene (one of `SCENES`).
        split: "test" (the held-out scene, whole files), "train" or "val" (every other file, cut at
            `VAL_START_FRAME`).
        window_options: passed to `windows` (obs_len, pred_len, stride, neighbours, min_agents, max_neighbours).
    """
    names = split_files(held_out, split)
    paths = checked_files(data_dir, {name: SHA256[name] for name in names}, what="ETH/UCY")
    parts = []
    for name in names:
        rows = read_file(paths[name])
        if split != "test":
            later = rows[:, 0] >= VAL_START_FRAME[name]
            rows = rows[later] if split == "val" else rows[~later]
        parts.append(windows(rows, env=SCENES.index(FILE_SCENE[name]), **window_options))
    return concatenate(parts, window_options.get("max_neighbours"))


def spurious_confidence(past: np.ndarray, future: np.ndarray, alpha) -> np.ndarray:
    """GCRL's synthetic "confidence" channel, one value per observed step (`[B, obs]`), which leaks the future.

    `c_t = alpha_e (||d_{t+obs} - d_t|| + 1)` with `d_t = p_t - p_{t-1}` the step displacement over the full window
    (`d_0 = 0`), t < obs (GCRL `trajectories.py::TrajectoryDataset.__init__`, `add_confidence`). It correlates with
    the future change of velocity, with a scale `alpha_e` that differs per environment: a spurious feature.
    """
    path = np.concatenate([past, future], axis=-2)
    steps = np.concatenate([np.zeros_like(path[..., :1, :]), np.diff(path, axis=-2)], axis=-2)
    obs = past.shape[-2]
    if future.shape[-2] < obs:
        raise ConfigError("the confidence channel reads obs future steps; the future is too short")
    change = np.linalg.norm(steps[..., obs:2 * obs, :] - steps[..., :obs, :], axis=-1)
    return (np.asarray(alpha)[..., None] * (change + 1.0)).astype(np.float32)
