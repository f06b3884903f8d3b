"""The ranking pipeline's heavy steps on Ray: embeddings, scoring over user shards, DDP training.

Nothing here is imported on the default (local) path; every module imports Ray when called.
"""
