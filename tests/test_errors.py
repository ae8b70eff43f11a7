"""stgraph.errors: one message, the setting named as the library and as the command line
spell it."""

import pytest

from stgraph.errors import Setting, SettingError, SettingWarning, flag


def test_settings_are_spelled_by_who_reads_the_message():
    err = SettingError("{output} {path} holds a run; pass {overwrite}", path="/x/{odd}")
    assert str(err) == "output /x/{odd} holds a run; pass overwrite"  # values verbatim
    assert err.for_cli() == "--output /x/{odd} holds a run; pass --overwrite"
    assert isinstance(err, ValueError)
    assert flag("split_file") == "--split-file"


def test_a_setting_known_at_run_time_and_several_in_one_field():
    err = SettingError("{own} and {model_arg} {key} both set {key}", own=Setting("tau"),
                       key="tau")
    assert err.for_cli() == "--tau and --model-arg tau both set tau"
    assert str(err) == "tau and model_arg tau both set tau"
    many = SettingError("{given} is not for {dataset} synthetic",
                        given=(Setting("root"), Setting("split_id")))
    assert many.for_cli() == "--root, --split-id is not for --dataset synthetic"


def test_a_warning_names_settings_the_same_way():
    with pytest.warns(SettingWarning, match="seq_len 20 exceeds") as caught:
        import warnings

        warnings.warn(SettingWarning("{seq_len} {n} exceeds", n=20), stacklevel=1)
    assert caught[0].message.for_cli() == "--seq-len 20 exceeds"
