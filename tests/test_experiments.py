"""The experiment scripts of experiments/: they run, and their measures are right on known inputs.

These are checks of research scripts, not of the product: marked ``experiment`` (``pytest -m "not
experiment"`` leaves them out).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_eval import _write_images

pytestmark = pytest.mark.experiment


def test_feature_spectrum_shares_and_cli(tmp_path, capsys):
    """experiments/feature_spectrum.py: variance shares of known spectra, and a run on labelled folders."""
    import feature_spectrum

    rng = np.random.default_rng(0)
    columns = rng.standard_normal((20000, 4)) * np.sqrt([6.0, 2.0, 1.0, 1.0])  # variances 6:2:1:1
    shares = feature_spectrum.spectrum(columns)
    assert shares["top1_variance"] == pytest.approx(0.6, abs=0.01)
    assert shares["top10_variance"] == pytest.approx(1.0)
    equal = feature_spectrum.spectrum(rng.standard_normal((20000, 8)))
    assert equal["effective_rank"] == pytest.approx(8.0, rel=0.01)  # a flat spectrum: every direction counts
    assert shares["effective_rank"] < 4.0

    _write_images(tmp_path / "train", per_class=8, seed=0)
    _write_images(tmp_path / "test", per_class=4, seed=1)
    common = ["--train", str(tmp_path / "train"), "--test", str(tmp_path / "test"), "--cache-dir", str(tmp_path / "c")]
    assert feature_spectrum.main([*common, "random:0", "--json", str(tmp_path / "s.json")]) == 0
    entry = json.loads((tmp_path / "s.json").read_text())["backbones"]["random:0"]
    assert 0.0 < entry["top1_variance"] <= entry["top10_variance"] <= 1.0 + 1e-9
    assert 1.0 <= entry["effective_rank"] <= 512
    assert 1 / 3 < entry["knn"] <= 1.0, "three flat colours: a random backbone's kNN is far above chance"
    capsys.readouterr()
    with pytest.raises(SystemExit):
        feature_spectrum.main([*common, "random:x"])
    assert "random:S with an integer seed" in capsys.readouterr().err
    _write_images(tmp_path / "two", per_class=4, classes=("red", "green"))
    with pytest.raises(SystemExit):
        feature_spectrum.main(["--train", str(tmp_path / "train"), "--test", str(tmp_path / "two"), "random:0"])
    assert "different classes" in capsys.readouterr().err
