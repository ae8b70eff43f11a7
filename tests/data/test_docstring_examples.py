import doctest
import importlib

import pytest

MODULES = [
    "stgraph.data.sampling",
    "stgraph.data.seeding",
    "stgraph.data.registry",
    "stgraph.data.transforms",
    "stgraph.data.clips",
    "stgraph.data.samplers",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_every_public_name_is_exported_and_documented():
    import stgraph.data as data

    assert sorted(data.__all__) == sorted(set(data.__all__))
    for name in data.__all__:
        obj = getattr(data, name)
        if callable(obj) and not isinstance(obj, type(data.IMAGENET_MEAN)):
            doc = obj.__doc__ or ""
            assert doc.strip(), f"{name} has no docstring"
            if name not in {"Tracklet", "UnknownDatasetError"}:
                assert "Args:" in doc or "Returns:" in doc or "Attributes:" in doc, name
