"""Dumps written by Neptune's official `neptune-exporter` (Parquet + files), every layout, both flavours."""
