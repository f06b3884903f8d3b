"""Online A/B experiments: stable assignment of users to variants, and the analysis of outcomes.

Pure Python and pandas/scipy; nothing here imports MLflow or the ranking stack at import time, so
the HTTP API can assign users without paying for them.
"""
