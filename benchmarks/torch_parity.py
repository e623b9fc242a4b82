"""``python -m benchmarks.torch_parity`` (or this file) runs :mod:`torch_side.parity`."""

if __name__ == "__main__":
    import pathlib  # noqa: E401
    import runpy
    import sys

    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # the repository
    runpy.run_module("torch_side.parity", run_name="__main__", alter_sys=True)
