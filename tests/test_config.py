"""Config: defaults equal ctapipe's, per-type patterns (later override earlier), files, overrides, errors."""
from pathlib import Path

import numpy as np
import pytest

from dvp.config import ConfigError, QualityQuery, load_config
from dvp.kernels.clean import CLEANERS
from dvp.kernels.extract import EXTRACTORS

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
LST, NECTAR, FLASH = "LST_LST_LSTCam", "MST_MST_NectarCam", "MST_MST_FlashCam"


def test_defaults_are_ctapipe_defaults():
    cfg = load_config().r1_to_dl1
    name, params = cfg.extractor.resolve(LST)
    assert name == "NeighborPeakWindowSum"
    assert params["window_width"] == 7 and params["window_shift"] == 3 and params["local_weight"] == 0
    assert params["apply_integration_correction"] is True
    name, params = cfg.cleaner.resolve(NECTAR)
    assert name == "TailcutsImageCleaner"
    assert (params["picture_threshold_pe"], params["boundary_threshold_pe"]) == (10.0, 5.0)
    assert params["min_picture_neighbors"] == 2 and params["keep_isolated_pixels"] is False
    assert cfg.focal_length_choice == "equivalent" and cfg.apply_peak_time_shift


def test_ctapipe_default_file_equals_no_config():
    a, b = load_config(CONFIGS / "ctapipe-default.toml").r1_to_dl1, load_config().r1_to_dl1
    for t in (LST, NECTAR, FLASH):
        assert a.extractor.resolve(t) == b.extractor.resolve(t)
        assert a.cleaner.resolve(t) == b.cleaner.resolve(t)
    assert a.image_quality.criteria == b.image_quality.criteria


def test_base_config_per_type_thresholds():
    cfg = load_config(CONFIGS / "base.toml").r1_to_dl1
    th = lambda t: (cfg.cleaner.resolve(t)[1]["picture_threshold_pe"], cfg.cleaner.resolve(t)[1]["boundary_threshold_pe"])
    assert th(LST) == (8.5, 4.25)
    assert th("LST_LSTN-design_LSTN-design") == (8.5, 4.25)
    assert th(NECTAR) == (9.0, 4.5) and th(FLASH) == (9.0, 4.5)
    assert th("SST_ASTRI_CHEC") == (4.0, 2.0)
    assert th("UNKNOWN-7987PX") == (10.0, 5.0)  # no pattern matches: ctapipe's default


def test_later_patterns_override_earlier(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[r1_to_dl1.cleaner."*"]\npicture_threshold_pe = 6.0\n'
                 '[r1_to_dl1.cleaner."MST*"]\npicture_threshold_pe = 7.0\n'
                 '[r1_to_dl1.cleaner."MST*FlashCam"]\npicture_threshold_pe = 8.0\n')
    cfg = load_config(f).r1_to_dl1
    assert cfg.cleaner.resolve(LST)[1]["picture_threshold_pe"] == 6.0
    assert cfg.cleaner.resolve(NECTAR)[1]["picture_threshold_pe"] == 7.0
    assert cfg.cleaner.resolve(FLASH)[1]["picture_threshold_pe"] == 8.0
    # untouched keys keep ctapipe's defaults
    assert cfg.cleaner.resolve(FLASH)[1]["boundary_threshold_pe"] == 5.0


def test_component_switch_per_type(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("r1_to_dl1:\n  extractor:\n    '*': {name: NeighborPeakWindowSum}\n"
                 "    'MST*FlashCam': {name: LocalPeakWindowSum, window_width: 5}\n")
    cfg = load_config(f).r1_to_dl1
    assert cfg.extractor.resolve(LST)[0] == "NeighborPeakWindowSum"
    name, params = cfg.extractor.resolve(FLASH)
    assert name == "LocalPeakWindowSum" and params["window_width"] == 5
    assert set(params) == set(EXTRACTORS["LocalPeakWindowSum"])


def test_set_overrides(tmp_path):
    cfg = load_config(CONFIGS / "base.toml", ["r1_to_dl1.cleaner.LST*.picture_threshold_pe=12",
                                              'r1_to_dl1.focal_length_choice="effective"']).r1_to_dl1
    assert cfg.cleaner.resolve(LST)[1]["picture_threshold_pe"] == 12.0
    assert cfg.cleaner.resolve(NECTAR)[1]["picture_threshold_pe"] == 9.0
    assert cfg.focal_length_choice == "effective"
    # a bare word is taken as a string
    assert load_config(None, ["r1_to_dl1.invalid_pixel_handler=none"]).r1_to_dl1.invalid_pixel_handler == "none"


@pytest.mark.parametrize("text, message", [
    ("[r1_to_dl1]\nfocal_lenght_choice = 'equivalent'\n", "unknown key 'r1_to_dl1.focal_lenght_choice'"),
    ("[r1_to_dll]\n", "unknown key 'r1_to_dll'"),
    ('[r1_to_dl1.cleaner."LST*"]\npicture_treshold_pe = 8.0\n', "unknown key 'picture_treshold_pe'"),
    ('[r1_to_dl1.cleaner."LST["]\npicture_threshold_pe = 8.0\n', "bad telescope-type pattern 'LST['"),
    ('[r1_to_dl1.cleaner."LST Cam"]\npicture_threshold_pe = 8.0\n', "bad telescope-type pattern"),
    ('[r1_to_dl1.cleaner."*"]\npicture_threshold_pe = "high"\n', "expected a number"),
    ('[r1_to_dl1.extractor."*"]\nname = "MagicSum"\n', "unknown extractor 'MagicSum'"),
    ("[r1_to_dl1]\nfocal_length_choice = 'best'\n", "focal_length_choice must be one of"),
    ("[r1_to_dl1.image_quality]\ncriteria = [['x', 'leakage > 0.2']]\n", "unknown name 'leakage'"),
    ("[r1_to_dl1.image_quality]\ncriteria = [['x', '__import__(\"os\")']]\n", "may be called"),
    ("[r1_to_dl1.image_quality]\ncriteria = [['x', 'size.real > 1']]\n", "unsupported syntax"),
    ("[r1_to_dl1\n", "not valid TOML"),
])
def test_bad_config_is_one_line_error_naming_file_and_key(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert message in msg and str(f) in msg and "\n" not in msg


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.toml")


def test_quality_query_evaluates_per_image():
    q = QualityQuery((("a", "image.sum() > 50"), ("b", "np.count_nonzero(image) > 2 and max_pe < 1000")))
    v = {"size": np.array([10.0, 60.0, 60.0, 60.0]), "n_pixels": np.array([3, 3, 3, 2]),
         "n_nonzero": np.array([3, 3, 3, 2]), "max_pe": np.array([5.0, 20.0, 2000.0, 30.0])}
    np.testing.assert_array_equal(q.evaluate(v, 4), [False, True, False, False])


def test_registries_list_ctapipe_components():
    assert {"FullWaveformSum", "FixedWindowSum", "GlobalPeakWindowSum", "LocalPeakWindowSum", "SlidingWindowMaxSum",
            "NeighborPeakWindowSum", "BaselineSubtractedNeighborPeakWindowSum", "TwoPassWindowSum"} <= set(EXTRACTORS)
    assert {"TailcutsImageCleaner", "MARSImageCleaner", "FACTImageCleaner", "TimeConstrainedImageCleaner"} <= set(CLEANERS)


def test_config_files_dl1_to_dl2_sections():
    default, cfg_file = load_config().dl1_to_dl2, load_config(CONFIGS / "ctapipe-default.toml").dl1_to_dl2
    assert cfg_file.method == default.method == "HillasReconstructor"
    assert cfg_file.quality.criteria == default.quality.criteria
    base = load_config(CONFIGS / "base.toml").dl1_to_dl2
    assert ("not clipped", "leakage_intensity_width_2 < 0.5") in base.quality.criteria
