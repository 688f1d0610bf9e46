from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from redis_server import start_redis  # noqa: E402
from tiny_models import ARCHITECTURES, build_tiny_model  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread everywhere: tiny models gain nothing from more, and on a shared 2-core
    machine 2 OpenMP threads stall (docs/architecture.md)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_merged_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adapters are merged at each load, as before the merged cache: the random adapters tests make
    would otherwise leave a merged copy each in the user's cache. The cache's own test turns it on."""
    monkeypatch.setenv("EGTLM_MERGED_CACHE", "0")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared evaluation data folder (`$EGTLM_DATA_DIR`, else `../shared/data` beside the
    repository), found as the readers find it. Where it is absent, as in a fresh clone, the test that
    asks for it skips; where it is present, a missing or malformed file still fails in the reader."""
    from egtlm_core.evaluation.datasets import data_dir

    try:
        return data_dir()
    except FileNotFoundError as missing:
        pytest.skip(f"../shared/data not found: {missing}")


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, Path]:
    """One tiny random model per supported architecture, saved like a real checkpoint."""
    root = tmp_path_factory.mktemp("tiny")
    return {arch: build_tiny_model(root / arch, arch) for arch in ARCHITECTURES}


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_model_dirs) -> Path:
    return tiny_model_dirs["llama"]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """One Redis for the session's tests (each test uses its own key prefix)."""
    pytest.importorskip("redis")
    from egtlm_core.server import free_port

    port = free_port()
    process = start_redis(port)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray cluster of 2 CPUs for one test module (one torch thread per worker), shut down after."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})  # fmt: skip
    yield
    ray.shutdown()
