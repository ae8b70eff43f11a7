import pytest

from stgraph.data import (
    PRID2011,
    SyntheticReID,
    UnknownDatasetError,
    VideoReIDDataset,
    create_dataset,
    list_datasets,
    register_dataset,
)


def test_list_datasets():
    names = list_datasets()
    assert {"prid2011", "synthetic"} <= set(names) and names == sorted(names)


def test_create_dataset_builds_the_named_class():
    ds = create_dataset("synthetic", num_train_ids=3, num_test_ids=2, seed=4)
    assert isinstance(ds, SyntheticReID) and ds.seed == 4 and ds.num_train_pids == 3
    assert isinstance(create_dataset("SYNTHETIC", num_train_ids=2, num_test_ids=1), SyntheticReID)


@pytest.mark.parametrize("name", list_datasets())
def test_every_registered_dataset_is_a_video_reid_dataset(name):
    from stgraph.data.registry import _DATASETS

    assert issubclass(_DATASETS[name], VideoReIDDataset) and _DATASETS[name].name == name


def test_unknown_name_lists_the_choices():
    expected = r"unknown dataset 'mars2'; choose one of: .*prid2011.*synthetic"
    with pytest.raises(ValueError, match=expected):
        create_dataset("mars2")
    with pytest.raises(KeyError) as info:
        create_dataset("x")
    assert str(info.value) == "unknown dataset 'x'; choose one of: " + ", ".join(list_datasets())
    assert isinstance(info.value, UnknownDatasetError)


def test_register_rejects_a_taken_name():
    with pytest.raises(ValueError, match="'prid2011' is already taken by PRID2011"):

        @register_dataset("prid2011")
        class Other(VideoReIDDataset):
            pass

    assert create_dataset.__module__ == "stgraph.data.registry"
    assert register_dataset("prid2011")(PRID2011) is PRID2011  # re-registering itself is fine
