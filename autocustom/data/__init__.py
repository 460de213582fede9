"""Datasets: records, atomic files, the generation pipeline, dedup and the split by subarea."""
