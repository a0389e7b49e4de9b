"""Service settings: every environment variable of API.md, read in one place."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration from environment variables (names as in the README's settings table)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    host: str = "0.0.0.0"
    port: int = Field(8000, ge=0, le=65535)
    models: Path = Path("models/catalog.toml")
    device: str = "auto"
    """`auto` (first CUDA device when present, else cpu), `cpu`, `cuda` or `cuda:N`."""
    workers_per_device: int = Field(0, ge=0, le=16)
    """Workers (each with its replica) per model and device; 0: one, and on a CPU its batches are
    split across lanes by the size of the model's rows (app/runtime/threads.py)."""

    max_batch_size: int = Field(64, ge=1)
    """Most requests (work items) in one batch."""
    max_batch_rows: int = Field(4096, ge=1)
    """Most work rows (instances x passes) in one batch; larger items run alone, chunked by Captum."""
    cpu_chunk_mb: int = Field(8, ge=0)
    """CPU models: fewer rows per Captum chunk than MAX_BATCH_ROWS, so that a chunk's largest
    activation stays below this many MiB (but at least 8 rows within 4x that; app/inference/
    chunking.py); 0: no cap."""
    max_batch_delay_ms: float = Field(0.0, ge=0.0, le=1000.0)
    """How long a worker waits for more work before running a batch that is not full."""
    max_queue: int = Field(65536, ge=1)
    """Most queued work rows per model before new requests get 429."""

    max_instances: int = Field(64, ge=1)
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(40_000_000, ge=1)
    """One image: width x height, read from its header before any pixel is decoded."""
    max_request_pixels: int = Field(64_000_000, ge=1)
    """All the images of one request together."""
    max_output_pixels: int = Field(16_777_216, ge=1)
    """All the overlays and heatmaps of one answer together (render.max_size scales them down)."""
    max_request_rows: int = Field(16_384, ge=1)
    """Work rows (instances x the method's passes) one request may cost; also at most MAX_QUEUE."""
    request_timeout_s: float = Field(60.0, gt=0.0)
    header_timeout_s: float = Field(10.0, gt=0.0)
    """A connection that has not sent a request's headers this long after it opened (or after its
    previous answer) is closed; idle keep-alive connections are closed sooner (5 s)."""
    body_timeout_s: float = Field(30.0, gt=0.0)
    """A request whose body has not arrived whole this long after its headers gets 408."""
    shutdown_grace_s: float = Field(30.0, ge=0.0)

    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    metrics_public: bool = False
    """With API_KEYS set, /metrics needs a key unless this is true (a scraper that cannot send one)."""
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    host_workers: int = Field(0, ge=0)
    """Workers decoding images and rendering overlays, charts and PNGs; 0 = the host's CPU count."""
    omp_wait_policy: Literal["PASSIVE", "ACTIVE"] = "PASSIVE"
    """OpenMP's (libgomp's own variable, applied by `python -m app` before torch loads): whether a
    compute thread waiting for its team sleeps (PASSIVE) or spins (ACTIVE, libgomp's default for a
    while): spinning threads take the cores host work and other compute threads need."""
    malloc_retain: bool = True
    """glibc keeps freed blocks of up to 32 MiB for reuse instead of returning them to the kernel
    at once, so a batch's tensors do not fault their pages in again (app/runtime/heap.py);
    resident memory stays near its peak, and work over 64 MiB is still followed by a trim. The host
    work processes keep theirs up to 64 MiB."""
    host_nice: int = Field(0, ge=0, le=19)
    """How much lower the host work processes' priority is than the service's (Unix niceness):
    above 0, when the cores are contended, the event loop and the model workers run first (at the
    cost of smaller batches: bench/results/history.md)."""
    host_mode: Literal["auto", "process", "thread"] = "auto"
    """Where that host work runs: worker processes (off this process's interpreter lock, which the
    event loop and the device workers need), threads of this process, or `auto` (processes)."""
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    # Cluster mode (`explainserve serve --ray`, app/deploy): one replica of the whole service per device.
    ray_address: str | None = Field(None, validation_alias=AliasChoices("ray_address", "RAY_ADDRESS"))
    """The Ray cluster to join (`host:port` of its head, `ray://...`, `auto`); none: start a local one."""
    ray_replicas: int = Field(1, ge=1)
    """Fixed replica count, used unless RAY_MAX_REPLICAS turns autoscaling on."""
    ray_min_replicas: int = Field(1, ge=0)
    ray_max_replicas: int | None = Field(None, ge=1)
    """Set: autoscale between RAY_MIN_REPLICAS and this on ongoing requests per replica."""
    ray_target_ongoing_requests: float = Field(16.0, gt=0.0)
    ray_upscale_delay_s: float = Field(30.0, ge=0.0)
    ray_downscale_delay_s: float = Field(600.0, ge=0.0)
    ray_max_ongoing_requests: int | None = Field(None, ge=1)
    """Requests one replica holds at once (running and in its own queue); none: 2 x MAX_BATCH_SIZE,
    so a batch can form while the previous one runs."""
    ray_max_queued_requests: int = Field(256, ge=-1)
    """Requests a Serve proxy holds while every replica is full; beyond it, 429 (-1: no bound)."""
    ray_replica_cpus: float = Field(1.0, ge=0.0)
    ray_replica_gpus: float | None = Field(None, ge=0.0)
    """GPUs per replica; none: 1 when DEVICE is not cpu and the cluster has GPUs, else 0."""
    ray_proxy_location: Literal["EveryNode", "HeadOnly"] = "EveryNode"

    @field_validator("ray_address", "ray_max_replicas", "ray_max_ongoing_requests", "ray_replica_gpus",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("omp_wait_policy", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
