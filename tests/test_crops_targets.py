import numpy as np
import pytest
from conftest import random_joints

from posemachines.core.crops import (
    Augmentation,
    apply_affine,
    crop_transform,
    invert_affine,
    person_crop,
    to_image_coordinates,
    warp_image,
)
from posemachines.core.skeletons import LSP14
from posemachines.core.targets import BeliefCodec
from posemachines.data import Sample
from posemachines.errors import PoseMachinesError


def test_crop_transform_maps_box_to_crop_and_inverts_exactly():
    m = crop_transform(np.array([50.0, 40.0]), 100.0, 64, scale=1.2, rotation=30, flip=True)
    centre = apply_affine(m, np.array([[50.0, 40.0]]))
    np.testing.assert_allclose(centre, [[31.5, 31.5]])
    pts = np.random.default_rng(0).uniform(0, 100, (10, 2))
    back = apply_affine(invert_affine(m), apply_affine(m, pts))
    np.testing.assert_allclose(back, pts, atol=1e-9)


def test_warp_puts_a_pixel_where_the_transform_says():
    image = np.zeros((80, 60, 3), np.uint8)
    image[30, 20] = 255  # pixel centre at x=20, y=30
    m = crop_transform(np.array([24.5, 34.5]), 40.0, 40)  # scale 1, integer shift
    crop = warp_image(image, m, 40)
    x, y = apply_affine(m, np.array([[20.0, 30.0]]))[0]
    assert crop[int(round(y)), int(round(x)), 0] == 255
    assert crop[..., 0].sum() == 255  # a pure shift keeps exactly that one pixel


def test_person_crop_flip_swaps_left_and_right():
    joints = random_joints(1)[0]
    sample = Sample(
        np.zeros((100, 100, 3), np.uint8),
        joints,
        np.ones(14, bool),
        np.ones(14, bool),
        np.array([49.5, 49.5]),
        100.0,
    )
    rng = np.random.default_rng(0)
    aug = Augmentation(scale=(1, 1), rotation=0, flip=1.0, shift=0)
    crop = person_crop(sample, 100, LSP14, aug, rng)
    # mirrored x, and joint 0 (right ankle) of the crop is the original left ankle (5)
    assert crop.joints[0, 0] == pytest.approx(99 - joints[5, 0])
    assert crop.joints[0, 1] == pytest.approx(joints[5, 1])


def test_crop_round_trip_to_image_coordinates():
    joints = random_joints(1)[0]
    sample = Sample(
        np.zeros((120, 90, 3), np.uint8),
        joints,
        np.ones(14, bool),
        np.ones(14, bool),
        np.array([44.5, 59.5]),
        120.0,
    )
    crop = person_crop(sample, 64, LSP14)
    back = to_image_coordinates(crop.joints[None], crop.transform[None])[0]
    np.testing.assert_allclose(back, joints, atol=1e-9)


def test_encode_decode_round_trip_is_sub_pixel():
    codec = BeliefCodec(64, 4, 3.0)
    joints = np.random.default_rng(1).uniform(6, 58, (3, 14, 2))
    maps, weights = codec.encode(joints, np.ones((3, 14), bool))
    assert maps.shape == (3, 15, 16, 16) and weights.shape == (3, 15)
    decoded, conf = codec.decode(maps[:, :14])
    np.testing.assert_allclose(decoded, joints, atol=0.01)
    assert (conf > 0.5).all()


def test_unlabelled_joint_gives_empty_map_and_zero_weight():
    codec = BeliefCodec(32, 4, 2.0)
    joints = np.full((1, 2, 2), 16.0)
    labelled = np.array([[True, False]])
    maps, weights = codec.encode(joints, labelled)
    assert maps[0, 1].max() == 0 and weights[0, 1] == 0 and weights[0, 0] == 1
    np.testing.assert_allclose(maps[0, 2], np.maximum(0, 1 - maps[0, 0]), atol=1e-6)


def test_codec_validates_geometry():
    with pytest.raises(PoseMachinesError, match="multiple of the stride"):
        BeliefCodec(30, 4, 2.0)


def test_torch_encoding_matches_numpy():
    torch = pytest.importorskip("torch")
    codec = BeliefCodec(48, 4, 2.5)
    joints = random_joints(2, 14)[..., :2] * 0.45
    labelled = np.ones((2, 14), bool)
    labelled[1, 3] = False
    a, wa = codec.encode(joints, labelled)
    b, wb = codec.encode(torch.tensor(joints, dtype=torch.float32), torch.tensor(labelled))
    np.testing.assert_allclose(b.numpy(), a, atol=1e-5)
    np.testing.assert_array_equal(wb.numpy(), wa)


def test_batched_crop_transforms_equal_one_at_a_time():
    from posemachines.core.crops import crop_transforms

    rng = np.random.default_rng(1)
    centres, sides = rng.uniform(20, 80, (6, 2)), rng.uniform(30, 90, 6)
    scales, rots, flips = rng.uniform(0.7, 1.3, 6), rng.uniform(-40, 40, 6), rng.random(6) < 0.5
    batch = crop_transforms(centres, sides, 48, scales=scales, rotations=rots, flips=flips)
    for i in range(6):
        one = crop_transform(
            centres[i], sides[i], 48, scale=scales[i], rotation=rots[i], flip=flips[i]
        )
        np.testing.assert_allclose(batch[i], one, atol=1e-12)


def test_augmentation_draws_one_at_a_time_as_in_a_batch_of_one():
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    aug = Augmentation()
    for _ in range(3):
        scale, rot, flip, shift = aug.draw(a)
        bs, br, bf, bsh = aug.draw_batch(b, 1)
        assert (scale, rot, flip) == (bs[0], br[0], bf[0]) and np.array_equal(shift, bsh[0])


def test_decoding_at_the_map_border_stays_on_the_map():
    """A peak in a border cell has no neighbour beyond it: it is not refined across the
    border (no NaN, no jump off the map); one cell inside, it is refined again."""
    codec = BeliefCodec(32, 4, 4.0)
    grid = codec.grid()
    maps = np.zeros((1, 3, 8, 8))
    maps[0, 0, 0, 0], maps[0, 0, 0, 1] = 1.0, 0.5  # corner peak, a neighbour inside
    maps[0, 1, 7, 7] = 1.0
    maps[0, 2, 4, 1], maps[0, 2, 4, 0], maps[0, 2, 4, 2] = 1.0, 0.2, 0.6  # one cell inside
    keypoints, confidence = codec.decode(maps)
    assert np.isfinite(keypoints).all() and (confidence == 1.0).all()
    np.testing.assert_array_equal(keypoints[0, 0], [grid[0], grid[0]])
    np.testing.assert_array_equal(keypoints[0, 1], [grid[-1], grid[-1]])
    assert grid[1] < keypoints[0, 2, 0] < grid[1] + codec.stride / 2  # pulled towards 0.6
