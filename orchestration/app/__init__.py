"""The app around the code location: how a person drives freshrank from a terminal.

`launcher` is the `freshrank` console script and `cli` its commands; `demo` and `replay` run the
packaged sample end to end; `watch` is the warm refresher behind `freshrank refresh --watch`;
`dev` starts the Dagster and MLflow UIs (`make dev`); `reporting` (with `memory`) runs a job
in-process and tells the person what happened. None of it is part of the code location that
Dagster loads (orchestration.definitions); all of it uses it.
"""
