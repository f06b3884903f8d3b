"""Where the heavy steps run: in this process (``local``) or on Ray, chosen by configuration.

The assets that embed, train and score take this resource. On the default (local) path nothing
here imports Ray; with ``FRESHRANK_COMPUTE=ray`` each step opens a Ray session (a local Ray on
127.0.0.1, or the cluster at ``FRESHRANK_RAY_ADDRESS``) and closes what it started.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
from dagster import ConfigurableResource

from ml.embeddings import EmbeddingConfig, TextEmbedder
from ml.pipeline.parallel import Ranked, ShardHandler, active_warm_pool, handled
from ml.pipeline.pipeline import PipelineConfig, RankingPipeline
from ml.pipeline.snapshot import Behaviour
from orchestration.settings import Settings

LOCAL = "local"
RAY = "ray"


class ComputeResource(ConfigurableResource):
    """The compute engine of the embeddings, training and scoring assets.

    Empty values take the settings (``FRESHRANK_COMPUTE``, ``FRESHRANK_RAY_*``), so one
    definition serves every deployment and a run can still override them.
    """

    engine: str = ""  # local or ray
    ray_address: str = ""  # empty: the settings' (unset there: a local Ray)

    def engine_for(self, settings: Settings) -> str:
        engine = self.engine or settings.compute
        if engine not in (LOCAL, RAY):
            raise ValueError(f"compute engine {engine!r}: must be {LOCAL!r} or {RAY!r}")
        return engine

    @contextmanager
    def session(self, settings: Settings) -> Iterator[None]:
        """Ray for the duration of the block when the engine is Ray; nothing otherwise."""
        if self.engine_for(settings) == LOCAL:
            yield
            return
        from ml.distributed.session import RayOptions, ray_session

        options = RayOptions(
            address=self.ray_address or settings.ray_address,
            num_cpus=settings.ray_num_cpus,
            object_store_mb=settings.ray_object_store_mb,
        )
        with ray_session(options):
            yield

    def training(self, settings: Settings, config: PipelineConfig) -> PipelineConfig:
        """``config`` with its sequential source trained by DDP workers on Ray when the engine
        is Ray and the source is on (open a ``session`` around the fitting)."""
        if self.engine_for(settings) == LOCAL or "sequential" not in config.sources:
            return config
        on_ray = replace(
            config.sequential,
            train_workers=settings.ray_train_workers,
            train_storage=settings.ray_storage,
        )
        return replace(config, sequential=on_ray)

    def encode(
        self, settings: Settings, config: EmbeddingConfig, texts: Sequence[str]
    ) -> tuple[np.ndarray, dict[str, object]]:
        """(unit vectors of ``texts``, figures for the UI: engine, device or Ray workers)."""
        if self.engine_for(settings) == LOCAL:
            embedder = TextEmbedder(config)
            figures = {
                "engine": LOCAL,
                "device": str(embedder.device),
                "precision": embedder.precision,
            }
            return embedder.encode(texts), figures
        from ml.distributed.embeddings import embed_on_ray

        with self.session(settings):
            embedded = embed_on_ray(texts, config, settings.ray_workers)
        figures = {"engine": RAY, "device": "ray", "ray_workers": len(embedded.worker_pids)}
        return embedded.result, figures

    def rank(
        self,
        settings: Settings,
        pipeline: RankingPipeline,
        behaviour: Behaviour,
        ranking: Callable[[RankingPipeline, Behaviour], Ranked],
        on_shard: ShardHandler | None = None,
        stamp: str | None = None,
    ) -> Ranked:
        """``ranking(pipeline, behaviour)``, over user shards on Ray when the engine is Ray
        (see ml/distributed/scoring.py for what ``ranking`` must be), or in local worker
        processes when there are many users (settings.rank_processes). ``on_shard`` gets each
        shard's result as it arrives (in this process the whole result is one shard) and says
        what of it to keep (ml.pipeline.parallel.ShardHandler). In a warm refresher (an open
        ml.pipeline.parallel.warm_pool), a ranking whose whole result is kept (a refresh's)
        goes to the pool's workers, which keep the pipeline loaded between calls (``stamp``:
        which saved serving state the pipeline was read from, for workers that read it too)."""
        if self.engine_for(settings) == LOCAL:
            pool = active_warm_pool()
            if pool is not None and on_shard is None:
                return pool.rank(pipeline, behaviour, ranking, stamp)
            many = len(behaviour.users) >= settings.rank_processes_min_users
            if settings.rank_processes > 1 and many:
                from ml.pipeline.parallel import rank_in_processes

                return rank_in_processes(
                    pipeline,
                    behaviour,
                    settings.rank_processes,
                    ranking,
                    on_shard,
                    compiled_rankers=settings.compiled_rankers,
                )
            return handled(on_shard, ranking(pipeline, behaviour))
        from ml.distributed.scoring import rank_on_ray

        with self.session(settings):
            shards = settings.ray_workers
            return rank_on_ray(pipeline, behaviour, shards, ranking, on_shard).result
