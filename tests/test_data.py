import numpy as np
import pytest
import scipy.io
from conftest import needs_lsp, real_data_root

from posemachines.data import (
    CorruptImageError,
    SkippedImages,
    find_data_root,
    iter_samples,
    load_dataset,
    person_box,
)
from posemachines.data.lsp import load_lsp, load_lspet
from posemachines.errors import PoseMachinesError


def test_synthetic_is_deterministic_and_splits_are_disjoint():
    a = load_dataset("synthetic", "train", size=5, seed=3)
    b = load_dataset("synthetic", "train", size=5, seed=3)
    test = load_dataset("synthetic", "test", size=5, seed=3)
    np.testing.assert_array_equal(a[2].image, b[2].image)
    np.testing.assert_array_equal(a.joints, b.joints)
    assert not np.allclose(a.joints, test.joints)
    s = a[0]
    assert s.image.shape == (160, 160, 3) and s.image.dtype == np.uint8
    assert s.joints.shape == (14, 2) and s.labelled.all()
    # joints lie inside the image
    assert (a.joints >= -1).all() and (a.joints <= 160).all()


def test_synthetic_subset_keeps_images():
    a = load_dataset("synthetic", "train", size=6)
    sub = a.subset([4, 1])
    np.testing.assert_array_equal(sub[0].image, a[4].image)
    np.testing.assert_array_equal(sub.joints[1], a.joints[1])


def test_person_box_protocols():
    joints = np.array([[10.0, 20.0], [30.0, 60.0]])
    centre, side = person_box((100, 80), joints, np.array([True, True]), "image")
    np.testing.assert_allclose(centre, [39.5, 49.5])
    assert side == 100
    centre, side = person_box((100, 80), joints, np.array([True, True]), "gt")
    np.testing.assert_allclose(centre, [20, 40])
    assert side == pytest.approx(1.35 * 40)
    with pytest.raises(PoseMachinesError):
        person_box((10, 10), joints, np.array([True, True]), "magic")


def test_data_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEMACHINES_DATA", str(tmp_path))
    assert find_data_root() == (tmp_path, "$POSEMACHINES_DATA")
    other = tmp_path / "x"
    other.mkdir()
    assert find_data_root(other)[0] == other
    with pytest.raises(PoseMachinesError, match="does not exist"):
        find_data_root(tmp_path / "missing")
    monkeypatch.delenv("POSEMACHINES_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert find_data_root() == (tmp_path / "cache" / "posemachines" / "data", "cache directory")


def test_missing_dataset_names_the_path(tmp_path):
    with pytest.raises(PoseMachinesError, match="expected .*lsp/joints.mat"):
        load_dataset("lsp", "train", data_root=tmp_path)
    with pytest.raises(PoseMachinesError, match="'mpii-nope' not found.*keypoints.json"):
        load_dataset("mpii-nope", "train", data_root=tmp_path)


def _fake_lsp(tmp_path, joints, n_images=3):
    from PIL import Image

    (tmp_path / "images").mkdir(exist_ok=True)
    for i in range(n_images):
        Image.fromarray(np.full((40, 30, 3), 100, np.uint8)).save(
            tmp_path / "images" / f"im{i + 1:04d}.jpg"
        )
    scipy.io.savemat(tmp_path / "joints.mat", {"joints": joints})
    return tmp_path


def test_lsp_wrong_shape_is_a_clear_error(tmp_path):
    _fake_lsp(tmp_path, np.zeros((3, 13, 2000)))
    with pytest.raises(PoseMachinesError, match=r"joints.mat: 'joints' has shape 3x13x2000"):
        load_lsp(tmp_path)


def test_lsp_nan_coordinates_are_a_clear_error(tmp_path):
    joints = np.ones((3, 14, 2000))
    joints[0, 5, 1500] = np.nan
    _fake_lsp(tmp_path, joints)
    with pytest.raises(PoseMachinesError, match="NaN .* the first for im1501.jpg"):
        load_lsp(tmp_path, "test")


def test_lsp_converts_one_based_coordinates_and_flags(tmp_path):
    joints = np.ones((3, 14, 2000))
    joints[0, 0, 0] = 11.0
    joints[2] = 0  # visible
    joints[2, 1, 0] = 1  # occluded
    _fake_lsp(tmp_path, joints)
    d = load_lsp(tmp_path, "train")
    assert len(d) == 1000
    assert d.joints[0, 0, 0] == 10.0
    assert not d.visible[0, 1] and d.visible[0, 0] and d.labelled.all()


def test_corrupt_image_skip_or_stop(tmp_path):
    _fake_lsp(tmp_path, np.ones((3, 14, 2000)), n_images=2)
    (tmp_path / "images" / "im0002.jpg").write_bytes(b"not a jpeg")
    d = load_lsp(tmp_path, "train").subset([0, 1, 2])
    skipped = SkippedImages()
    got = [i for i, _ in iter_samples(d, skipped=skipped)]
    assert got == [0]  # 1 is corrupt, 2 is missing
    assert skipped.names == ["im0002.jpg", "im0003.jpg"]
    assert skipped.summary().startswith("2 unreadable images skipped (im0002.jpg: ")
    with pytest.warns(UserWarning, match="skipping sample im000[23].jpg"):
        assert [i for i, _ in iter_samples(d)] == [0]
    with pytest.raises(CorruptImageError, match="im0002.jpg: cannot decode"):
        list(iter_samples(d, on_bad_image="stop"))


def test_lspet_flags(tmp_path):
    joints = np.ones((14, 3, 4))
    joints[3, 2, 0] = 0  # not visible -> unlabelled in LSPET
    (tmp_path / "images").mkdir()
    scipy.io.savemat(tmp_path / "joints.mat", {"joints": joints})
    d = load_lspet(tmp_path)
    assert len(d) == 4 and not d.labelled[0, 3] and d.labelled[0, 2]
    assert d.protocol == "gt"
    with pytest.raises(PoseMachinesError, match="only a 'train' split"):
        load_lspet(tmp_path, "test")


@needs_lsp
def test_real_lsp_and_lspet_sizes():
    root = real_data_root()
    assert len(load_dataset("lsp", "train", root)) == 1000
    test = load_dataset("lsp", "test", root)
    assert len(test) == 1000 and test.names[0] == "im1001.jpg"
    assert test[0].image.ndim == 3
    assert len(load_dataset("lspet", "train", root)) == 9000


def test_concatenated_datasets_read_each_sample_from_its_own_part():
    from posemachines.core.skeletons import COCO17
    from posemachines.data import ConcatDataset

    a = load_dataset("synthetic", "train", size=5, seed=0)
    b = load_dataset("synthetic", "test", size=3, seed=1, protocol="gt")
    both = ConcatDataset([a, b])
    assert len(both) == 8 and both.name == "synthetic+synthetic"
    assert both.protocol == "image+gt" and both.names[5].startswith("synthetic/")
    for i, (part, j) in enumerate([(a, k) for k in range(5)] + [(b, k) for k in range(3)]):
        mine, theirs = both[i], part[j]
        np.testing.assert_array_equal(mine.image, theirs.image)
        np.testing.assert_array_equal(mine.joints, theirs.joints)
        assert mine.box_side == theirs.box_side  # each part's own person-box protocol
    sub = both.subset([6, 1])
    np.testing.assert_array_equal(sub[0].image, b[1].image)
    np.testing.assert_array_equal(sub[1].joints, a[1].joints)
    other = a.subset([0])
    other.skeleton = COCO17
    with pytest.raises(PoseMachinesError, match="skeletons differ"):
        ConcatDataset([a, other])
