"""The faults only a GPU would show, each with a CPU proxy: the device a worker thread runs the model on
(serve's executor, the thread where Ray Data calls an actor), the device check and its fallback, one device
var for every command that runs a model, the CPU really chosen, transformer output dropped after
evaluation, and the benchmark's GPU sampling, memory peaks and warm-up.

The proxy for "the GPU": a distinguishable thinc Ops (a NumpyOps subclass) made current in the main thread,
as require_gpu makes CupyOps current; a thread that does not take it over sees plain NumpyOps."""

import sys
import threading
import types
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import spacy
import srsly
from spacy.language import Language
from support.paths import ROOT, load_benchmark, training_benchmark_arguments
from thinc.api import NumpyOps, get_current_ops, set_current_ops

from iob_ner.inference.ray_engine import actor as ray_actor
from iob_ner.util.errors import SetupError
from iob_ner.util.runtime import ThreadDevice, select_device

SEEN = []  # (thread name, ops class name) for each doc the recording component sees


class MarkedOps(NumpyOps):
    """Stands in for CupyOps: what the main thread activated."""

    name = "marked"


@Language.component("record_ops")
def record_ops(doc):
    SEEN.append((threading.current_thread().name, type(get_current_ops()).__name__))
    return doc


@pytest.fixture
def marked_main_thread():
    """MarkedOps current in this thread for the test, then the CPU again."""
    set_current_ops(MarkedOps())
    SEEN.clear()
    yield
    set_current_ops(NumpyOps())


# --- 1. serve: the executor thread that runs nlp.pipe uses the main thread's device ---------------------


def test_serve_runs_the_pipeline_on_the_device_the_main_thread_chose(marked_main_thread):
    from support.serving import serving

    nlp = spacy.blank("en")
    nlp.add_pipe("record_ops")
    with serving(nlp, device=ThreadDevice(-1)) as url:
        answer = httpx.post(f"{url}/ner", json={"texts": ["one text", "another"]}, timeout=30)
    assert answer.status_code == 200
    threads = {thread for thread, _ in SEEN}
    assert threads and threading.current_thread().name not in threads  # it ran in the worker thread
    assert {ops for _, ops in SEEN} == {"MarkedOps"}, SEEN


# --- 2. the Ray engine: the actor's __call__ runs in a thread of Ray Data's --------------------------------


def test_a_ray_actor_runs_the_pipeline_on_the_device_its_init_chose(tmp_path, monkeypatch, marked_main_thread):
    nlp = spacy.blank("en")
    nlp.add_pipe("record_ops")
    nlp.to_disk(tmp_path / "model")

    def select_marked(gpu_id):  # what select_device(0) does on a GPU: the GPU's ops, current in this thread
        set_current_ops(MarkedOps())
        return -1, "marked device"

    monkeypatch.setattr(ray_actor, "select_device", select_marked)
    # an actor silences wasabi for its process (the driver reports once): put it back after this test
    monkeypatch.setattr(ray_actor.msg, "no_print", ray_actor.msg.no_print)
    actor = ray_actor.PipelineActor(
        str(tmp_path / "model"), False, batch_size=4, max_length=1000, min_score=0.0, iob=False
    )
    set_current_ops(NumpyOps())  # the init thread's choice must not leak: only the actor's own record counts
    batch = {"shard": [0], "index": [0], "docs": [srsly.json_dumps([["d1", "in:1", "a text"], ["d2", "in:2", "more"]])]}
    with ThreadPoolExecutor(1, thread_name_prefix="ray-data") as pool:  # as Ray Data calls a callable class
        pool.submit(actor, batch).result()
    assert SEEN and {ops for _, ops in SEEN} == {"MarkedOps"}, SEEN


# --- 3. the device check is thinc's, and every failure is one sentence (a CPU fallback under auto) ------


@pytest.fixture
def gpu_machine_with_broken_cupy(monkeypatch):
    """torch sees a GPU and `import cupy` works, but thinc's own check failed (cupy.cublas or cupyx would not
    import, e.g. a cupy-cuda12x beside a CUDA 13 torch)."""
    import torch
    from thinc import compat

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setitem(sys.modules, "cupy", types.ModuleType("cupy"))
    monkeypatch.setattr(compat, "has_cupy", False)
    monkeypatch.setattr(compat, "has_cupy_gpu", False)


def test_auto_falls_back_to_the_cpu_with_the_reason_when_thincs_gpu_check_fails(gpu_machine_with_broken_cupy):
    gpu, description = select_device(None)
    assert gpu == -1 and type(get_current_ops()) is NumpyOps
    assert description.startswith("CPU (cupy is not installed, or cupy.cublas or cupyx does not import")


def test_an_asked_for_gpu_that_thinc_cannot_use_is_one_sentence(gpu_machine_with_broken_cupy):
    with pytest.raises(SetupError) as err:
        select_device(0)
    assert str(err.value).startswith("GPU 0 was asked for, but cupy is not installed, or cupy.cublas")
    assert "\n" not in str(err.value) and "drop the GPU option" in str(err.value)


def test_a_gpu_that_fails_to_activate_falls_back_under_auto(monkeypatch):
    import torch
    from thinc import compat

    from iob_ner.util import runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(compat, "has_cupy", True)
    monkeypatch.setattr(compat, "has_cupy_gpu", True)

    def fail(gpu_id):  # as require_gpu fails where a CUDA library does not load
        raise ValueError("libcublas.so.13: cannot open shared object file\nmore detail")

    monkeypatch.setattr(runtime, "_activate", fail)
    gpu, description = select_device(None)
    assert gpu == -1 and "activating it failed (libcublas.so.13: cannot open shared object file)" in description
    with pytest.raises(SetupError, match=r"^GPU 0 was asked for, but activating it failed \(libcublas"):
        select_device(0)


# --- 4. one device var for every command that runs a model ----------------------------------------------

MODEL_COMMANDS = {
    "train",
    "distill",
    "evaluate",
    "crossval",
    "data-curve",
    "audit",
    "predict",
    "review",
    "serve",
    "loadtest",
}


def test_every_command_that_runs_a_model_takes_gpu_id_and_the_gpu_id_environment_variable():
    project = srsly.read_yaml(ROOT / "project.yml")
    assert project["env"]["gpu_id"] == "GPU_ID"
    commands = {c["name"]: " ".join(c["script"]) for c in project["commands"]}
    assert MODEL_COMMANDS <= set(commands)
    for name in MODEL_COMMANDS:
        lines = [line for line in next(c for c in project["commands"] if c["name"] == name)["script"]]
        for line in lines:
            assert '--gpu-id "${vars.gpu_id}"' in line and '--gpu-id-env="${env.gpu_id}"' in line, (name, line)
    for name, script in commands.items():  # and no other command runs a model without them
        if "--gpu-id" in script:
            assert name in MODEL_COMMANDS, name


# --- 5. the CPU asked for is the CPU, also after a GPU was activated ------------------------------------


def test_asking_for_the_cpu_makes_the_cpu_current(marked_main_thread):
    gpu, description = select_device(-1)
    assert (gpu, description) == (-1, "CPU (asked for)")
    assert type(get_current_ops()) is NumpyOps


# --- 6. evaluation keeps no transformer output -----------------------------------------------------------


def test_predicted_docs_keep_no_transformer_output(trf_nlp):
    from iob_ner.evaluation.metrics import predict_gold

    nlp, gold = trf_nlp
    assert nlp(gold[0].text)._.trf_data is not None  # the pipeline does make it
    examples, _ = predict_gold(nlp, gold, batch_size=2)
    assert examples and all(eg.predicted._.trf_data is None and eg.predicted.tensor is None for eg in examples)
    assert any(eg.predicted.ents for eg in examples) or all(not eg.reference.ents for eg in examples)


# --- 7. the benchmark: the right GPU sampled, each recipe's own memory peak, an untimed warm-up -----------


def test_the_gpu_sampler_names_the_gpu_by_uuid(monkeypatch):
    import torch

    bench = load_benchmark("training/benchmark_training.py")
    props = types.SimpleNamespace(uuid="5a3c0e4e-1234-5678-9abc-def012345678", name="H200")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda gpu: props)
    # CUDA's GPU 0 under CUDA_VISIBLE_DEVICES=3 is nvidia-smi's 3: only the UUID names it for both
    assert bench.nvidia_smi_id(0) == "GPU-5a3c0e4e-1234-5678-9abc-def012345678"
    assert bench.GpuSampler(0).smi_id == "GPU-5a3c0e4e-1234-5678-9abc-def012345678"


def test_the_benchmark_warms_up_untimed_before_the_first_recipe(monkeypatch, tmp_path):
    bench = load_benchmark("training/benchmark_training.py")
    calls = []
    monkeypatch.setattr(bench, "select_device", lambda gpu_id: (0, "GPU 0 (stand-in)"))
    monkeypatch.setattr(bench, "plan", lambda runs, defaults, gpu: ["fp32"] * len(runs))
    monkeypatch.setattr(bench, "warm_up", lambda config, gpu, precision: calls.append(("warm_up", gpu)))

    def recipe(run, chosen, **kwargs):
        calls.append(("recipe", run.recipe))
        return {
            "recipe": run.recipe,
            "spec": run.spec,
            "settings": {},
            "device": "stand-in",
            "budget_s": 1,
            "train_words_per_s": 1.0,
            "steps": 1,
            "test": {"p": 0, "r": 0, "f": 0.0, "infer_words_per_s": 1.0},
            "dev": {"f": 0.0},
            "gpu_busy_percent": None,
            "peak_gpu_memory_mb": None,
            "train_s": 1,
            "epochs": 0,
        }

    monkeypatch.setattr(bench, "run_recipe", recipe)
    bench.benchmark(
        **training_benchmark_arguments(
            tmp_path / "out.json", gpu_id="0", recipes="token,transition", infer_batch_sizes="64"
        )
    )
    assert calls == [("warm_up", 0), ("recipe", "token"), ("recipe", "transition")]


def test_the_warm_up_trains_a_fixed_number_of_untimed_steps(tmp_path):
    from iob_ner.corpus.convert import convert_iob
    from iob_ner.util.runtime import resolve_transformer

    bench = load_benchmark("training/benchmark_training.py")
    for split in ("train", "dev"):
        convert_iob(ROOT / "assets" / f"{split}.tsv", tmp_path / split, write_json=False)
    config = bench.build_config("token", tmp_path, resolve_transformer("embedded"), 200, None)
    result = bench.train_for(config, gpu=-1, budget=0.0, time_schedule=False, max_steps=2)
    assert result["steps"] == 2 and result["train_words"] > 0
    bench.release_gpu_memory(-1)  # the CPU: nothing to release, and no error
