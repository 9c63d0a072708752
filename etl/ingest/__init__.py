"""`etl ingest`: bring your own logs (CSV or Parquet) into the raw tables through a YAML mapping."""
