import numpy as np
import pytest

from posemachines.core.tta import (
    TestTimeAugmentation,
    parse_scales,
    view_to_plain,
    zoom_matrix,
)
from posemachines.data import Sample
from posemachines.errors import PoseMachinesError


def mirrored(sample: Sample) -> Sample:
    w = sample.image.shape[1]
    joints = sample.joints.copy()
    joints[:, 0] = w - 1 - joints[:, 0]
    centre = np.array([w - 1 - sample.centre[0], sample.centre[1]])
    return Sample(
        sample.image[:, ::-1].copy(),
        joints,
        sample.visible,
        sample.labelled,
        centre,
        sample.box_side,
        sample.name,
    )


def test_scales_are_parsed_and_checked():
    assert parse_scales("0.7,1.0,1.3") == (0.7, 1.0, 1.3)
    assert parse_scales(None) == (1.0,)
    with pytest.raises(PoseMachinesError, match="comma-separated"):
        parse_scales("0.7,big")
    with pytest.raises(PoseMachinesError, match="within 0.25-4"):
        TestTimeAugmentation(scales=(9.0,))
    assert TestTimeAugmentation().is_identity
    assert len(TestTimeAugmentation(flip=True, scales=(0.8, 1.0)).views()) == 4


@pytest.mark.parametrize("scale", [0.7, 1.3, 2.0])
def test_a_zoomed_view_is_brought_back_to_the_plain_grid(scale):
    """A peak at plain cell u sits at c + s (u - c) in the view zoomed by s; resampling the
    view puts it back at u."""
    w, c, u = 16, 7.5, 9
    beliefs = np.zeros((1, 2, w, w), np.float32)
    at = c + scale * (u - c)
    lo = int(np.floor(at))
    beliefs[0, 0, lo : lo + 2, lo : lo + 2] = 1.0  # a peak spread over the 4 nearest cells
    plain = view_to_plain(beliefs, scale, False, [0])
    y, x = np.unravel_index(plain[0, 0].argmax(), (w, w))
    assert (y, x) == (u, u)
    _, inside = zoom_matrix(w, scale)
    assert inside.all() == (scale <= 1.0)


def test_mirrored_view_swaps_left_and_right():
    b = np.zeros((1, 3, 4, 4), np.float32)
    b[0, 0, 1, 0] = 1  # joint 0 (say left) at the left edge
    plain = view_to_plain(b, 1.0, True, [1, 0])
    assert plain[0, 1, 1, 3] == 1 and plain[0, 0].sum() == 0


def random_cnn_model(skeleton):
    torch = pytest.importorskip("torch")
    from posemachines.backends.cnn.config import CONFIGS
    from posemachines.backends.cnn.stage import CPMNetwork, CPMStage
    from posemachines.core.model import PoseModel
    from posemachines.core.targets import BeliefCodec

    torch.manual_seed(0)
    cfg = CONFIGS["cpm-tiny"]
    network = CPMNetwork(cfg)
    with torch.no_grad():  # an untrained head is near-flat: give the maps clear peaks
        for p in network.module.parameters():
            p.normal_(0.0, 0.3)
    codec = BeliefCodec(cfg.input_size, cfg.stride, cfg.sigma)
    return PoseModel("cnn", skeleton, codec, [CPMStage(network, t) for t in range(cfg.stages)])


def mirror_keypoints(kp, width, perm):
    back = kp[:, :, perm].copy()
    back[..., 0] = width - 1 - back[..., 0]
    return back


def test_flip_averaged_prediction_of_a_mirrored_image_is_the_mirrored_prediction(synthetic_test):
    """Images as large as the network's input, so that the crop is the image itself and the
    crop of the mirrored image is exactly the mirrored crop."""
    skeleton = synthetic_test.skeleton
    model = random_cnn_model(skeleton)
    side, p = model.input_size, skeleton.num_joints
    rng = np.random.default_rng(0)
    samples = [
        Sample(
            rng.integers(0, 256, (side, side, 3), dtype=np.uint8),
            np.zeros((p, 2)),
            np.ones(p, bool),
            np.ones(p, bool),
            np.full(2, (side - 1) / 2),
            float(side),
        )
        for _ in range(6)
    ]
    perm = skeleton.flip_permutation()
    flip = TestTimeAugmentation(flip=True)
    kp = model.predict_samples(samples, flip).keypoints
    kp_m = model.predict_samples([mirrored(s) for s in samples], flip).keypoints
    np.testing.assert_allclose(mirror_keypoints(kp_m, side, perm), kp, atol=1e-6)
    # the same without the mirrored view is not a mirror image
    kp = model.predict_samples(samples).keypoints
    kp_m = model.predict_samples([mirrored(s) for s in samples]).keypoints
    assert np.abs(mirror_keypoints(kp_m, side, perm) - kp).max() > 1.0


def test_flip_and_scale_averaged_beliefs_of_a_mirrored_image_are_mirrored(synthetic_test):
    """With zoomed views the crops are resampled, so the mirror holds to the rounding of the
    resampled pixels."""
    from posemachines.core.tta import averaged_beliefs

    skeleton = synthetic_test.skeleton
    model = random_cnn_model(skeleton)
    perm = skeleton.flip_permutation()
    samples = [synthetic_test[i] for i in range(4)]
    tta = TestTimeAugmentation(flip=True, scales=(0.8, 1.0, 1.25))
    a = averaged_beliefs(model.stage_beliefs, samples, model.input_size, perm, tta)
    m = averaged_beliefs(
        model.stage_beliefs, [mirrored(s) for s in samples], model.input_size, perm, tta
    )
    channels = list(perm) + [skeleton.num_joints]
    for ours, theirs in zip(a, m):
        back = theirs[:, channels, :, ::-1]
        assert np.abs(back - ours).max() < 0.02 * np.abs(ours).max()


def test_identity_augmentation_predicts_as_without(synthetic_test, mean_model_dir):
    from posemachines.loading import load_model

    model = load_model(mean_model_dir)
    samples = [synthetic_test[i] for i in range(3)]
    a = model.predict_samples(samples).keypoints
    b = model.predict_samples(samples, TestTimeAugmentation(scales=(1.0,))).keypoints
    np.testing.assert_array_equal(a, b)
