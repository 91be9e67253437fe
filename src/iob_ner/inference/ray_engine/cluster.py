"""The Ray engine's cluster: joining the one named (or RAY_ADDRESS), else starting Ray on this machine, and the
runtime environments that bring this package's code to the workers. Ray is imported only inside the
functions that use it: it is optional (requirements-ray.txt)."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Tuple

from ...util.errors import SetupError

PACKAGE = Path(__file__).resolve().parents[2]  # iob_ner: the one piece of code the actors need


@dataclass
class Cluster:
    """Where the actors run: how many, with a GPU each or a CPU each, and a description to print."""

    actors: int
    use_gpu: bool
    description: str
    started_here: bool = False
    runtime_env: dict = field(default_factory=dict)


CODE = [PACKAGE]


def code_env(wheels: Sequence[Path], started: bool) -> Tuple[dict, dict]:
    """(the job's runtime_env, the actors' runtime_env) that bring this code and the wheels to the workers.

    Ray uploads local files only for a job it starts (ray.init): then py_modules carries the code and the
    pipeline wheels to every node. A Ray started by the caller (a test, a notebook) has its job already:
    the actors then find the code on this machine's path, which suits a local Ray."""
    for wheel in wheels:
        if not (wheel.is_file() and wheel.suffix == ".whl"):
            raise SetupError(f"{wheel} is not a wheel file (spacy project run package writes one in packages/)")
    if started:
        return {"py_modules": [str(p) for p in CODE + list(wheels)], "excludes": ["__pycache__"]}, {}
    if wheels:
        raise SetupError(
            "ray_wheel needs a Ray that predict starts itself; install the wheel on the "
            "cluster, or call ray.shutdown() first"
        )
    path = os.pathsep.join(filter(None, [str(PACKAGE.parent), os.environ.get("PYTHONPATH")]))
    return {}, {"env_vars": {"PYTHONPATH": path}}


def quiet_ray_data() -> None:
    """predict prints its own progress and counts: Ray Data's progress logs would drown them."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """One sentence, at once, for a cluster address nothing answers on: ray.init retries it for minutes."""
    if address in ("auto", "local"):
        return
    where = address.split("://", 1)[-1]
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        raise SetupError(f"the Ray address {address!r} is not HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise SetupError(
            f"cannot reach Ray at {address} ({err.strerror or err}): is the cluster up, and is "
            f"this its head's address? Leave ray_address and RAY_ADDRESS empty for a local Ray"
        ) from None


def connect(address: Optional[str], actors: int, gpu_id: Optional[int], wheels: Sequence[Path] = ()) -> Cluster:
    """Join the cluster at `address` (or RAY_ADDRESS), else start Ray on this machine; reuse a running one."""
    try:
        import ray
    except ImportError:
        raise SetupError("the ray engine needs Ray: pip install -r requirements-ray.txt") from None
    started = not ray.is_initialized()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if started and address:
        check_reachable(address)
    job_env, actor_env = code_env(wheels, started)
    if started:
        # Local: every CPU of this machine (or as many as actors asked), no dashboard, quiet logs.
        local_cpus = None if address else max(os.cpu_count() or 1, actors)
        ray.init(
            address=address or "local",
            num_cpus=local_cpus,
            include_dashboard=False,
            logging_level="ERROR",
            runtime_env=job_env,
        )
    quiet_ray_data()
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if gpu_id is not None and gpu_id >= 0 and not gpus:
        raise SetupError(f"GPU {gpu_id} was asked for, but the Ray cluster has no GPU; drop the GPU option")
    use_gpu = gpus > 0 and gpu_id != -1
    count = actors or (gpus if use_gpu else max(cpus, 1))
    where = f"Ray at {address}" if address else ("Ray (running)" if not started else "local Ray")
    kind = "GPU" if use_gpu else "CPU"
    return Cluster(count, use_gpu, f"{where}, {count} {kind} actor(s)", started, actor_env)
