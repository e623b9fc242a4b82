"""Small configs and runs shared by the training tests."""

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from configs import smoke
from resnet_jax.train.config_schema import ignored
from resnet_jax.train.metrics import TIMINGS

REPO = Path(__file__).resolve().parents[1]


def tiny_config(**overrides):
    """ResNet-20 on 8x8 synthetic images: a few seconds per run on a CPU. Unless given, the
    learning rate falls 10x at step 16 in runs longer than that."""
    config = smoke.get_config()
    config.image_size = 8
    config.synthetic_examples = (256, 100)
    config.batch_size = 32
    config.eval_batch_size = 32
    config.num_train_steps = 24
    config.eval_every_steps = 12
    config.checkpoint_every_steps = 6
    config.log_every_steps = 4
    config.lr_boundaries = (16,)
    config.update(overrides)
    if "lr_boundaries" not in overrides and config.num_train_steps <= 16:
        config.lr_boundaries, config.lr_scales = (), ()
    return config


def overrides_as_flags(config) -> list[str]:
    """The command-line flags that turn configs/smoke.py into ``config`` (leaving out the
    values that have no effect there, which train.py would refuse)."""
    base = smoke.get_config()
    return [f"--config.{key}={_flag_value(value)}" for key, value in config.items()
            if value != base[key] and not ignored(key, config.to_dict())]


def _flag_value(value) -> str:
    if isinstance(value, tuple | list):
        return "(" + ",".join(str(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return str(value)




def metric_rows(workdir: Path, drop=TIMINGS) -> list[dict]:
    rows = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in drop} for row in rows]


def run_train_py(workdir, config, *, devices=8, wait=True, extra=()):
    """train.py on configs/smoke.py turned into ``config``, on ``devices`` fake CPU devices.

    ``wait=False``: the running Popen, its output piped.
    """
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    command = [sys.executable, "train.py", "--config", "configs/smoke.py", "--workdir",
               str(workdir), *overrides_as_flags(config), *extra]
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)


def run_train_in_process(argv: list[str]) -> subprocess.CompletedProcess:
    """train.py's main on ``argv``, in this process (its devices: eight fake CPUs), with
    what it prints; as fast as a check can be, for the starts that are refused."""
    import train

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = train.main(list(argv))
    return subprocess.CompletedProcess(["train.py", *argv], status, out.getvalue(),
                                       err.getvalue())


@contextlib.contextmanager
def serving(files: dict[str, bytes], headers=None):
    """A local HTTP server of ``files`` (path -> bytes) for the duration: yields its address
    and the list of (method, path) it was asked for. ``headers(path, body)`` adds headers
    to each answer (the Hub's, for its client); a path not in ``files`` is a 404."""
    import http.server
    import threading

    asked = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            asked.append((self.command, self.path))
            body = files.get(self.path)
            self.send_response(404 if body is None else 200)
            for key, value in ({} if body is None or headers is None
                               else headers(self.path, body)).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            return body

        def do_HEAD(self):
            self._answer()

        def do_GET(self):
            body = self._answer()
            if body:
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", asked
    finally:
        server.shutdown()
        server.server_close()
