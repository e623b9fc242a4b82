"""``python -m benchmarks.wheelhouse`` (or this file) runs :mod:`tools.wheelhouse`."""

if __name__ == "__main__":
    import pathlib  # noqa: E401
    import runpy
    import sys

    sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # the repository
    runpy.run_module("tools.wheelhouse", run_name="__main__", alter_sys=True)
