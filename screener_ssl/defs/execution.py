"""Where steps execute: Dagster's default executor, or one Ray job per step on a Ray cluster (dagster-ray).

``SCREENER_SSL_EXECUTOR=ray`` sends every step of every run to the Ray cluster at
``SCREENER_SSL_RAY_ADDRESS`` (its job-submission address, ``http://<head>:8265``). Each step
runs the same asset code as the local path (``dagster api execute_step`` inside a Ray job),
writes the same artifacts under the shared data root, and reports its events to the Dagster
instance, which must therefore be reachable from the workers (the Postgres instance).

Resources are requested per step and per pool: every step asks for ``num_cpus``; steps in a
pool listed in ``pool_resources`` (``torch``: training and probing) ask for that pool's CPUs
and GPUs instead, so only those steps hold a GPU. dagster-ray's step handler does the submitting,
health checks and stopping; this module only picks the resources and the health-check interval.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import dagster as dg
from dagster._core.definitions.executor_definition import multiple_process_executor_requirements
from dagster._core.execution.retries import RetryMode, get_retries_config
from dagster._core.executor.step_delegating import StepDelegatingExecutor, StepHandlerContext
from pydantic import BaseModel, ConfigDict, Field

from screener_ssl.store.environment import project_variables

EXECUTOR_ENV = "SCREENER_SSL_EXECUTOR"
EXECUTORS = ("default", "ray")

# Forwarded into every Ray job: where the instance and the data root are, which sweep, which code.
FORWARDED_ENV = (
    "DAGSTER_HOME", "SCREENER_SSL_DATA_DIR", "SCREENER_SSL_SWEEP", "SCREENER_SSL_BARS", "SCREENER_SSL_LABELS",
    "SCREENER_SSL_PG_URL", "SCREENER_SSL_NIGHTLY_CRON", "SCREENER_SSL_NIGHTLY_VARIANTS", "PYTHONPATH",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", EXECUTOR_ENV, "SCREENER_SSL_RAY_ADDRESS",
)


class StepResources(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)


class RaySettings(BaseModel):
    """The Ray cluster and what each step asks of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    address: str = Field(description="job-submission address of the Ray head, e.g. http://127.0.0.1:8265")
    num_cpus: float = Field(1.0, ge=0, description="CPUs of a step outside the pools below")
    pool_resources: dict[str, StepResources] = Field(default_factory=lambda: {"torch": StepResources(num_cpus=2)})
    # How often the run worker asks Ray whether a step's job is still alive; a dead job is a failed
    # step, retried under the job's retry policy.
    health_check_seconds: int = Field(20, ge=1)
    forwarded_env: tuple[str, ...] = FORWARDED_ENV
    runtime_env: dict = Field(default_factory=dict, description="Ray runtime_env of every step (image, pip, working_dir)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "RaySettings":
        address = environ.get("SCREENER_SSL_RAY_ADDRESS", "")
        if not address:
            raise ValueError(f"{EXECUTOR_ENV}=ray needs SCREENER_SSL_RAY_ADDRESS (the Ray head's http://host:8265)")
        torch = StepResources(
            num_cpus=float(environ.get("SCREENER_SSL_RAY_TORCH_NUM_CPUS", "2")),
            num_gpus=float(environ.get("SCREENER_SSL_RAY_TORCH_NUM_GPUS", "0")),
        )
        return cls(
            address=address,
            num_cpus=float(environ.get("SCREENER_SSL_RAY_NUM_CPUS", "1")),
            pool_resources={"torch": torch},
            health_check_seconds=int(environ.get("SCREENER_SSL_RAY_HEALTH_CHECK_SECONDS", "20")),
        )


def _pool_aware_handler(settings: RaySettings):
    from dagster_ray.core.executor import RayStepHandler
    from ray.job_submission import JobSubmissionClient

    class PoolAwareRayStepHandler(RayStepHandler):
        """dagster-ray's step handler, with the CPU/GPU request chosen by the step's pool."""

        def launch_step(self, step_handler_context: StepHandlerContext) -> Iterator[dg.DagsterEvent]:
            step_key = self._get_step_key(step_handler_context)
            pool = step_handler_context.get_step_context(step_key).step.pool
            request = settings.pool_resources.get(pool or "", StepResources(num_cpus=settings.num_cpus))
            self.num_cpus, self.num_gpus = request.num_cpus, request.num_gpus or None
            yield from super().launch_step(step_handler_context)

    return PoolAwareRayStepHandler(
        client=JobSubmissionClient(settings.address),
        env_vars=list(settings.forwarded_env),
        runtime_env=settings.runtime_env,
        num_cpus=settings.num_cpus,
        num_gpus=None,
        memory=None,
        resources=None,
    )


def ray_step_executor(settings: RaySettings) -> dg.ExecutorDefinition:
    @dg.executor(
        name="ray",
        config_schema={"retries": get_retries_config()},
        requirements=multiple_process_executor_requirements(),
    )
    def ray(init_context) -> StepDelegatingExecutor:
        return StepDelegatingExecutor(
            _pool_aware_handler(settings),
            retries=RetryMode.from_config(init_context.executor_config["retries"]),
            check_step_health_interval_seconds=settings.health_check_seconds,
            should_verify_step=True,
        )

    return ray


def executor_from_env(environ: Mapping[str, str]) -> dg.ExecutorDefinition | None:
    """The executor ``environ``'s SCREENER_SSL_EXECUTOR names; None keeps Dagster's default (multiprocess)."""
    kind = environ.get(EXECUTOR_ENV, "default") or "default"
    if kind not in EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={kind!r}: expected one of {EXECUTORS}")
    if kind == "ray":
        return ray_step_executor(RaySettings.from_env(environ))
    return None


@dg.definitions
def execution_definitions() -> dg.Definitions:
    """The executor of the code location (the dg layout picks this up from the defs folder)."""
    return dg.Definitions(executor=executor_from_env(project_variables()))
