"""`egtlm serve --replicas N`: the server app as a Ray Serve deployment of N replicas.

Each replica is one process holding one `EgtLM` (loaded before the replica takes traffic) and
serving the same FastAPI app as `egtlm serve`; Ray Serve's proxy spreads requests over them. With
more than one replica, every replica keeps its document KV states and its document index in the
same Redis (`ServerSettings.redis_url`, see `redis_backing`), so a document posted to one replica is
retrieved, and its states spliced, by all. Ray is optional (`pip install 'egtlm[ray]'`) and imported
only when `serve_on_ray` runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..server.settings import ServerSettings

APP_NAME = "egtlm"
MIN_IN_FLIGHT = 64  # requests a replica takes at once: its batcher and generation queue order them


def _replica_class() -> Any:
    """The deployment class, built on first use so that importing this module needs no Ray."""
    from ray import serve

    @serve.deployment(name="EgtLMServer")
    @serve.ingress()
    class EgtLMServer:
        """One replica: the model loads in the constructor, so Ray Serve routes to it only once ready."""

        def __init__(self, settings: ServerSettings, threads: int) -> None:
            import torch

            from ..server.state import load_server_model

            torch.set_num_threads(threads)
            self.settings = settings
            self.lm = load_server_model(settings)

        def __serve_build_asgi_app__(self) -> Any:
            from ..server.app import create_app

            return create_app(self.settings, lm=self.lm)

    return EgtLMServer


def serve_on_ray(
    settings: ServerSettings,
    replicas: int,
    *,
    address: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    cpus_per_replica: float = 1.0,
    blocking: bool = True,
) -> None:
    """Run `replicas` copies of the server behind Ray Serve's proxy at http://host:port.

    Args:
        settings: what each replica serves with; `redis_url` is required for more than one replica.
        replicas: how many processes serve (each holds one model).
        address: a running Ray cluster ("auto", "ray://host:10001"); None starts a local one.
        cpus_per_replica: Ray CPUs each replica reserves, and its torch threads (at least one).
        blocking: wait until interrupted (the CLI); False returns once `/health` answers 200 through
            the proxy.
    """
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ValueError(f"replicas must be a positive integer, got {replicas!r}.")
    if replicas > 1 and settings.redis_url is None:
        raise ValueError(
            f"{replicas} replicas need a Redis they all reach for documents and their states "
            "(--redis redis://host:6379/0); without it a document posted to one replica is unknown to "
            "the others."
        )
    try:
        import ray
        from ray import serve
    except ImportError as e:
        raise ImportError("egtlm serve --replicas needs Ray Serve: pip install 'egtlm[ray]'") from e
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    threads = max(1, int(cpus_per_replica))
    serve.start(http_options={"host": host, "port": port})
    deployment = _replica_class().options(
        num_replicas=replicas,
        # Ray Serve's default (5 in flight per replica) would cap the embedding micro-batches at 5 texts
        max_ongoing_requests=max(MIN_IN_FLIGHT, 2 * settings.max_batch),
        ray_actor_options={
            "num_cpus": cpus_per_replica,
            "runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(threads)}},
        },
    )
    serve.run(deployment.bind(settings, threads), name=APP_NAME, route_prefix="/", blocking=blocking)
    if not blocking:  # the replicas are up; the proxy may route to them a moment later
        from ..server.background import wait_until_healthy

        wait_until_healthy(f"http://{host}:{port}")
