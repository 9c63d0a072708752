"""`etl clean`: validated users, POIs and impressions, and a rejects table with a reason per bad row."""
