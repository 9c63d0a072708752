import numpy as np
import pytest
import torch
from pyspark.sql import functions as F

from etl.tokens import wrap_text
from features.embeddings.encoder_runtime import get_encoder, resolve_encoder
from features.embeddings.udf import embedding_udf, length_sorted
from tests.features.builders import tiny_encoder_model
from training.embedding.encoder import encode_texts


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_encoder_model(tmp_path_factory.mktemp("enc") / "model", max_length=12)


def test_the_spark_udf_returns_what_the_encoder_returns_directly(spark, tiny):
    folder, encoder, tokenizer = tiny
    ref, _ = resolve_encoder(str(folder))
    texts = [wrap_text("scene_weather", w) for w in ("rainy", "sunny", "light snow", "fog")]
    texts += [wrap_text("scene_city", c) for c in ("Guangzhou", "Chengdu", "Xi'an city walls and more")]
    texts += [wrap_text("POI_name", "Aunt Li") + wrap_text("POI_dishes", "claypot rice, roast goose")]
    rows = [(i, t) for i, t in enumerate(texts)] + [(100, None), (101, "")]
    df = spark.createDataFrame(rows, "id int, text string")
    udf = embedding_udf(ref, batch_size=3)
    out = length_sorted(df, "text", 2).select("id", udf(F.col("text")).alias("e")).collect()
    got = {r["id"]: r["e"] for r in out}
    assert got[100]["vector"] is None and got[101]["vector"] is None  # no crash on bad input
    vectors = np.array([got[i]["vector"] for i in range(len(texts))], dtype=np.float32)
    truncated = [got[i]["truncated"] for i in range(len(texts))]
    direct, direct_truncated = get_encoder(ref).embed(texts, batch_size=3)  # same model, in process
    assert np.allclose(vectors, direct, atol=1e-5)
    assert truncated == direct_truncated.tolist() and truncated[-1] and not truncated[0]
    stage2 = encode_texts(encoder, tokenizer, texts, batch_size=2, max_length=12)  # the training maths
    assert torch.allclose(torch.from_numpy(vectors), stage2, atol=1e-5)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_bad_udf_settings_fail_early(tiny):
    ref, _ = resolve_encoder(str(tiny[0]))
    with pytest.raises(ValueError, match="batch_size"):
        embedding_udf(ref, batch_size=0)
    with pytest.raises(ValueError, match="precision"):
        embedding_udf(ref, precision="half")
