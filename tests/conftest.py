"""Test setup: eight fake CPU devices, so multi-device code runs on any machine, and one
XLA compilation cache for the whole session (subprocesses too): the tests compile the
same tiny programs many times over."""

import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    SESSION_CACHE = tempfile.mkdtemp(prefix="resnet_jax_xla_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = SESSION_CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
else:
    SESSION_CACHE = None


def pytest_sessionfinish(session, exitstatus):
    if SESSION_CACHE:
        shutil.rmtree(SESSION_CACHE, ignore_errors=True)


# The heaviest files first: under --dist loadfile each file runs whole on one worker, and a
# long file collected last would leave the other worker idle at the end of the suite.
HEAVY_FIRST = ("test_training.py", "test_reliability.py", "test_torch_compat.py",
               "test_streaming.py", "test_evidence.py", "test_bad_input.py",
               "test_torch_side.py", "test_doors.py", "test_degradation.py",
               "test_pretrained.py", "test_evaluation.py", "test_models.py", "test_nnx.py",
               "test_time_to_accuracy.py", "test_setup.py", "test_docs.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable within a file
