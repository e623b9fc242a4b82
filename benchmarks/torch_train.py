"""``python -m benchmarks.torch_train`` (or this file) runs the twin, :mod:`torch_side.train`."""

if __name__ == "__main__":
    import pathlib  # noqa: E401
    import runpy
    import sys

    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # the repository
    runpy.run_module("torch_side.train", run_name="__main__", alter_sys=True)
