import subprocess
import sys

import numpy as np
import pytest

from features.embeddings.vectors import (
    load_scene_meta,
    load_scene_vectors,
    save_scene_vectors,
    unknown_vector,
)


def test_export_round_trip_lookup_and_unknowns(tmp_path):
    weather = (np.array([30, -5, 12]), np.array([[0, 1], [1, 0], [0.6, 0.8]], dtype=np.float32))
    city = (np.array([7]), np.array([[0.0, -1.0]], dtype=np.float32))
    path = tmp_path / "v.npz"
    save_scene_vectors(
        path,
        {"weather": weather, "city": city, "season": (np.zeros(0), np.zeros((0, 2)))},
        {"encoder_version": "enc-x"},
    )
    loaded = load_scene_vectors(path)
    assert sorted(loaded) == ["city", "season", "weather"]
    ids, matrix = loaded["weather"]
    assert ids.tolist() == [-5, 12, 30] and matrix.shape == (4, 2) and matrix.dtype == np.float32
    assert np.allclose(matrix[:3], [[1, 0], [0.6, 0.8], [0, 1]])
    mean = np.array([1.6, 1.8]) / np.linalg.norm([1.6, 1.8])
    assert np.allclose(matrix[3], mean, atol=1e-6)  # the unknown row: normalised mean
    rows, unknown = loaded["weather"].rows([30, 31, -5, 0, 12])
    assert rows.tolist() == [2, 3, 0, 3, 1] and unknown == 2
    vectors, unknown = loaded["city"].lookup([7, 8])
    assert np.allclose(vectors, [[0, -1], [0, -1]]) and unknown == 1
    assert loaded["season"].matrix.shape == (1, 2) and np.all(loaded["season"].matrix == 0)
    assert loaded["season"].rows([1, 2]) == (pytest.approx([0, 0]), 2)
    meta = load_scene_meta(path)
    assert meta["dim"] == 2 and meta["encoder_version"] == "enc-x" and meta["format"] == 1


def test_unknown_vector_and_bad_input():
    assert np.allclose(unknown_vector(np.array([[3.0, 4.0]]), 2), [0.6, 0.8])
    assert np.all(unknown_vector(np.zeros((0, 3)), 3) == 0)
    with pytest.raises(ValueError, match="duplicate"):
        save_scene_vectors("/tmp/never.npz", {"f": (np.array([1, 1]), np.ones((2, 2)))}, {})


def test_the_loader_imports_without_spark_or_torch():
    code = (
        "import sys; import features.embeddings.vectors; "
        "bad = [m for m in ('pyspark', 'torch', 'mlflow') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
