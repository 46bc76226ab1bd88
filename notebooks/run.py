"""Execute the notebooks top to bottom with nbclient; fail on any cell error (make notebooks).

    python notebooks/run.py                    # every notebooks/NN-*.ipynb, in order
    python notebooks/run.py 02-reactive-workers.ipynb --timeout 30
    python notebooks/run.py --output-dir build/notebooks   # also keep executed copies

Each notebook starts (and stops) its own throwaway beanstalkd through
``rxbeanstalk.testing``, so this needs only the ``beanstalkd`` binary. The notebooks are
run in a kernel of this very interpreter (not whatever ``python3`` kernel is installed
elsewhere), in their own directory. The files themselves are never rewritten: they are
committed with their outputs cleared.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from traitlets import default

HERE = Path(__file__).resolve().parent


class ThisPythonKernel(AsyncKernelManager):
    """A kernel of this interpreter, whatever ``python3`` kernelspecs are installed."""

    @default("kernel_spec_manager")
    def _kernel_spec_manager_default(self) -> KernelSpecManager:
        # With no kernel directories to search, the only kernelspec left is ipykernel's
        # native one, which runs sys.executable: this environment, with rxbeanstalk in it.
        return KernelSpecManager(kernel_dirs=[], ensure_native_kernel=True)


def run_notebook(path: Path, timeout: float, output_dir: Path | None) -> str | None:
    """Execute one notebook; return why it failed, or ``None``."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_manager_class=ThisPythonKernel,  # owned by the client: shut down after
        kernel_name="python3",
        timeout=timeout,
        allow_errors=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute()
    except CellExecutionError as error:
        return str(error)
    except (CellTimeoutError, TimeoutError):
        return f"a cell ran longer than {timeout:g} s"
    except DeadKernelError as error:
        return f"the kernel died: {error}"
    finally:
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, output_dir / path.name)
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the notebooks named on the command line, or all of them; exit 1 on a failure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/[0-9]*.ipynb")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per cell (60)")
    parser.add_argument("--output-dir", type=Path, help="write the executed notebooks here")
    args = parser.parse_args(argv)
    paths = [p if p.exists() else HERE / p for p in args.notebooks] or sorted(
        HERE.glob("[0-9]*.ipynb")
    )
    if not paths:
        print("notebooks: nothing to run", file=sys.stderr)
        return 1
    failed = []
    started = time.monotonic()
    for path in paths:
        begun = time.monotonic()
        problem = run_notebook(path.resolve(), args.timeout, args.output_dir)
        took = time.monotonic() - begun
        if problem is None:
            print(f"notebooks: ok      {path.name} ({took:.1f} s)", flush=True)
        else:
            failed.append(path.name)
            print(f"notebooks: FAILED  {path.name} ({took:.1f} s)\n{problem}", flush=True)
    total = time.monotonic() - started
    if failed:
        print(f"notebooks: {len(failed)} of {len(paths)} failed: {', '.join(failed)}")
        return 1
    print(f"notebooks: all {len(paths)} ran top to bottom in {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
