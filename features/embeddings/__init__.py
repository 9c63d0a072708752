"""Stage 3, offline: the frozen stage-2 encoder embeds scene values (and user / POI texts) in a
Spark pandas UDF into Delta; `vectors` is the compact per-feature export a CTR model loads."""
