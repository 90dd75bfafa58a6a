"""The ETH/UCY loader (`gvlab.data.eth_ucy`): windows against hand-computed ones, checksums, counts per scene."""

import pathlib

import numpy as np
import pytest

from gvlab.data import eth_ucy, external

DATA_DIR = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "eth_ucy"

# A hand-made excerpt, 4 frames 10 apart. Agent 1 walks +1 m/step in x from (0, 0); agent 2 appears at frame 10
# at (0, 3) and walks +1 m/step in y; agent 3 stands at (5, 0) for frames 0-20, then leaves.
EXCERPT = """\
0\t1\t0.0\t0.0
0\t3\t5.0\t0.0
10\t1\t1.0\t0.0
10\t2\t0.0\t3.0
10\t3\t5.0\t0.0
20\t1\t2.0\t0.0
20\t2\t0.0\t4.0
20\t3\t5.0\t0.0
30\t1\t3.0\t0.0
30\t2\t0.0\t5.0
"""


@pytest.fixture
def excerpt(tmp_path):
    (tmp_path / "tiny.txt").write_text(EXCERPT)
    return tmp_path


@pytest.fixture
def data_dir():
    if not DATA_DIR.is_dir():
        pytest.skip(f"the ETH/UCY raw files are not at {DATA_DIR} (../shared/data/eth_ucy from the repository root)")
    return DATA_DIR


def test_windows_match_hand_computed_ones(excerpt):
    path = external.checked_files(excerpt, {"tiny.txt": external.sha256(excerpt / "tiny.txt")})["tiny.txt"]
    rows = eth_ucy.read_file(path)
    w = eth_ucy.windows(rows, env=3, obs_len=2, pred_len=1)
    # window at frame 0 (frames 0, 10, 20): complete agents 1 and 3 (2 is missing at 0);
    # window at frame 10 (10, 20, 30): complete agents 1 and 2 (3 is missing at 30); frame 20, 30: too late
    assert w.frame.tolist() == [0, 0, 10, 10] and w.agent.tolist() == [1, 3, 1, 2]
    np.testing.assert_allclose(w.origin, [[1, 0], [5, 0], [2, 0], [0, 4]])
    np.testing.assert_allclose(w.past, [[[-1, 0], [0, 0]], [[0, 0], [0, 0]], [[-1, 0], [0, 0]], [[0, -1], [0, 0]]])
    np.testing.assert_allclose(w.future, [[[1, 0]], [[0, 0]], [[1, 0]], [[0, 1]]])
    # neighbours present at both observed steps, relative to the focal agent's last observed position, nearest first:
    # frame 0: agent 1 (origin (1, 0)) sees 3 at (5, 0) - (1, 0) = (4, 0) twice; agent 3 (origin (5, 0)) sees 1 at
    #          (0, 0) - (5, 0) and (1, 0) - (5, 0)
    # frame 10: agent 1 (origin (2, 0)) sees 3 [(3, 0), (3, 0)] at distance 3 and 2 [(-2, 3), (-2, 4)] at 4.47;
    #           agent 2 (origin (0, 4)) sees 1 [(1, -4), (2, -4)] at 4.47 and 3 [(5, -4), (5, -4)] at 6.4
    assert w.neighbours.mask.tolist() == [[True, False], [True, False], [True, True], [True, True]]
    expected = np.zeros((4, 2, 2, 2))
    expected[0, 0] = [[4, 0], [4, 0]]
    expected[1, 0] = [[-5, 0], [-4, 0]]
    expected[2] = [[[3, 0], [3, 0]], [[-2, 3], [-2, 4]]]
    expected[3] = [[[1, -4], [2, -4]], [[5, -4], [5, -4]]]
    np.testing.assert_allclose(w.neighbours.values, expected)
    assert w.env.dtype == np.int32 and w.env.tolist() == [3] * 4
    assert w.sequence.tolist() == [0, 0, 1, 1]
    index, mask = eth_ucy.group_by_sequence(np.array([5, 2, 5, 5, 2, 9]))
    assert index.tolist() == [[1, 4, 0], [0, 2, 3], [5, 0, 0]] and mask.sum(1).tolist() == [2, 3, 1]
    # "full" neighbours must be present at all 3 steps: frame 10 loses agent 3 (absent at 30)
    full = eth_ucy.windows(rows, env=3, obs_len=2, pred_len=1, neighbours="full")
    assert full.neighbours.mask.tolist() == [[True], [True], [True], [True]]
    # Social GAN's rule (more than one complete agent) keeps both windows; asking for 3 keeps none
    assert len(eth_ucy.windows(rows, env=0, obs_len=2, pred_len=1, min_agents=2).past) == 4
    assert len(eth_ucy.windows(rows, env=0, obs_len=2, pred_len=1, min_agents=3).past) == 0
    # the cap keeps the nearest neighbour; stride 2 keeps the window at frame 0 only
    assert eth_ucy.windows(rows, env=0, obs_len=2, pred_len=1, max_neighbours=1).neighbours.values[2, 0, 0].tolist() \
        == [3.0, 0.0]
    assert eth_ucy.windows(rows, env=0, obs_len=2, pred_len=1, stride=2).frame.tolist() == [0, 0]
    # negative control: a longer window (3 + 1 steps) leaves only agent 1, from frame 0
    longer = eth_ucy.windows(rows, env=0, obs_len=3, pred_len=1)
    assert longer.agent.tolist() == [1] and longer.frame.tolist() == [0]


def test_checksum_and_format_errors(excerpt):
    digest = external.sha256(excerpt / "tiny.txt")
    (excerpt / "tiny.txt").write_text(EXCERPT.replace("5.0\t0.0", "5.1\t0.0", 1))  # one value edited
    with pytest.raises(external.DataError, match="tiny.txt: sha256 .* differs"):
        external.checked_files(excerpt, {"tiny.txt": digest})
    with pytest.raises(external.DataError, match="biwi_eth.txt: missing"):
        eth_ucy.load(excerpt, "eth", "test")
    (excerpt / "bad.txt").write_text("0 1 2.0\n")
    with pytest.raises(external.DataError, match="4 finite columns"):
        eth_ucy.read_file(excerpt / "bad.txt")
    (excerpt / "odd.txt").write_text("0 1 0 0\n15 1 0 0\n")
    with pytest.raises(external.DataError, match="10 apart"):
        eth_ucy.windows(eth_ucy.read_file(excerpt / "odd.txt"), env=0)


def _social_gan_count(rows, length=20, min_ped=1):
    """Independent count: Social GAN's `TrajectoryDataset` loop (frames list, partial agents skipped, > min_ped)."""
    frames = np.unique(rows[:, 0])
    total = 0
    for start in range(len(frames) - length + 1):
        span = frames[start:start + length]
        inside = rows[(rows[:, 0] >= span[0]) & (rows[:, 0] <= span[-1])]
        ids, counts = np.unique(inside[:, 1], return_counts=True)
        complete = int(np.sum(counts == length))
        total += complete if complete > min_ped else 0
    return total


def test_windows_per_scene_match_social_gan_counts(data_dir):
    counts = {s: len(eth_ucy.load(data_dir, s, "test").past) for s in ("eth", "hotel", "zara1")}
    sgan_like = {s: len(eth_ucy.load(data_dir, s, "test", min_agents=2, neighbours="full").past)
                 for s in ("eth", "hotel", "zara1")}
    print("test windows per scene (all complete agents):", counts, "Social GAN rule (min_agents=2):", sgan_like)
    # all five scenes, measured once with this loader and checked against the Social GAN loop on every file:
    # all complete agents eth 364, hotel 1197, univ 24334, zara1 2356, zara2 5910; min_agents=2: 181, 1053, 24334,
    # 2253, 5833 (univ: students001 14295 + students003 10039)
    assert counts == {"eth": 364, "hotel": 1197, "zara1": 2356}
    assert sgan_like == {"eth": 181, "hotel": 1053, "zara1": 2253}
    rows = eth_ucy.read_file(data_dir / "biwi_hotel.txt")
    assert _social_gan_count(rows, min_ped=1) == sgan_like["hotel"]
    assert _social_gan_count(rows, min_ped=0) == counts["hotel"]
    eth = eth_ucy.load(data_dir, "eth", "test")
    # every example's positions are real rows of the file, re-centred on the last observed one
    raw = eth_ucy.read_file(data_dir / "biwi_eth.txt")
    lookup = {(int(f), int(a)): (x, y) for f, a, x, y in raw}
    for b in (0, 100, 363):
        frames = eth.frame[b] + 10 * np.arange(20)
        truth = np.array([lookup[(f, eth.agent[b])] for f in frames]) - eth.origin[b]
        np.testing.assert_allclose(np.concatenate([eth.past[b], eth.future[b]]), truth, atol=1e-5)
    np.testing.assert_allclose(eth.past[:, -1], 0.0)
    univ = eth_ucy.concatenate([eth, eth])  # sequence ids stay unique across files
    assert len(np.unique(univ.sequence)) == 2 * len(np.unique(eth.sequence))


def test_leave_one_scene_out_files_and_environments():
    assert eth_ucy.split_files("univ", "test") == ("students001.txt", "students003.txt")
    train = eth_ucy.split_files("eth", "train")
    assert "biwi_eth.txt" not in train and {"crowds_zara03.txt", "uni_examples.txt"} <= set(train)
    assert not {"students001.txt", "students003.txt", "uni_examples.txt"} & set(eth_ucy.split_files("univ", "val"))
    with pytest.raises(ValueError, match="held_out must be one of"):
        eth_ucy.split_files("sdd", "test")


def test_spurious_confidence_reads_the_future():
    past = np.zeros((1, 8, 2), np.float32)
    future = np.stack([np.arange(1, 13, dtype=np.float32), np.zeros(12, np.float32)], -1)[None]  # 1 m/step from t=8
    conf = eth_ucy.spurious_confidence(past, future, np.array([2.0]))
    # d_t = 0 for t < 8 and d_8.. = (1, 0): c_t = 2 (|d_{t+8} - d_t| + 1) = 4 at every observed step
    np.testing.assert_allclose(conf, np.full((1, 8), 4.0))
    # negative control: a future that keeps the past velocity (standing still) gives alpha * 1
    np.testing.assert_allclose(eth_ucy.spurious_confidence(past, np.zeros_like(future), np.array([2.0])), 2.0)
