"""What a new user meets first: the start-up line naming the devices, a warning when a GPU
is there but JAX cannot see it, and the tensorboard program the README points to."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from resnet_jax.parallel import devices_line


def test_the_start_up_line_names_the_devices():
    assert devices_line("gpu", 8, 2, gpu_present=True) == "devices: 8 gpu device(s), 2 process(es)"
    assert "warning" not in devices_line("cpu", 8, 1, gpu_present=False)


def test_a_cpu_only_jax_beside_an_nvidia_gpu_is_named_with_the_install_command():
    warning = devices_line("cpu", 1, 1, gpu_present=True).splitlines()[1]
    assert warning.startswith("warning: an NVIDIA GPU is present but JAX sees only the CPU")
    assert "pip install -U 'jax[cuda12]" in warning


def test_the_readme_install_provides_the_tensorboard_program():
    assert shutil.which("tensorboard", path=str(Path(sys.executable).parent))


def test_the_benchmark_scripts_run_as_files_from_anywhere(tmp_path):
    root = Path(__file__).resolve().parents[1]
    scripts = {"benchmarks/throughput.py": "--quick", "torch_side/train.py": "--workdir",
               "torch_side/parity.py": "--sizes", "benchmarks/torch_train.py": None}
    for script, flag in scripts.items():  # benchmarks/torch_train.py: the twin's old name
        if flag:
            result = subprocess.run([sys.executable, str(root / script), "--help"],
                                    cwd=tmp_path, capture_output=True, text=True, timeout=300)
            assert "Traceback" not in result.stderr, result.stderr[-2000:]
            assert flag in result.stdout, script
            assert result.returncode in (0, 1), script  # absl's --help exits 1
        blocked = ("import runpy, sys; sys.modules['torch'] = None; "
                   f"runpy.run_path({str(root / script)!r}, run_name='__main__')")
        result = subprocess.run([sys.executable, "-c", blocked, "--help"], cwd=tmp_path,
                                capture_output=True, text=True, timeout=300)
        assert result.stderr.strip() == ("error: this script runs PyTorch too; install it with "
                                         "pip install -r requirements-dev.txt"), script


def test_the_package_installs_with_every_module(tmp_path):
    root, source = Path(__file__).resolve().parents[1], tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(root / name, source)
    shutil.copytree(root / "resnet_jax", source / "resnet_jax",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path),
                    str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("resnet_jax-*.whl")
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    modules = {str(p.relative_to(root)) for p in (root / "resnet_jax").rglob("*.py")}
    assert modules == shipped
