"""Sessions that build, lint, type-check and test the four loftr packages.

``nox -l`` lists them. ``nox -s tests-3.10`` is the test command the README gives; arguments
after ``--`` reach pytest, e.g. ``nox -s tests-3.11 -- -k attention -x``.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests-3.11", "lint", "typecheck"]
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).resolve().parent
PACKAGES = ["loftr-attention", "loftr-core", "loftr-data", "loftr-train"]
PACKAGE_PATHS = [f"packages/{name}" for name in PACKAGES]
SRC_PATHS = [f"packages/{name}/src" for name in PACKAGES]
# The one torch every session installs first, so pip never picks a surprise build. On Python 3.11
# this machine has a local CPU wheel; other Pythons download the registry's build (cached by pip).
TORCH = os.environ.get("LOFTR_TORCH", "torch==2.13.0")
# h5py, poselib, pycolmap, onnx*: loftr-core's optional hloc / poselib / colmap / onnx
# extras, so their tests run too
TEST_DEPS = [
    "pytest>=8",
    "hypothesis>=6",
    "kornia>=0.7",
    "h5py>=3.8",
    "poselib>=2.0",
    "pycolmap>=4.0",
    "onnx>=1.16",
    "onnxscript>=0.3",
    "onnxruntime>=1.18",
]
PYTHONS = ["3.10", "3.11", "3.12"]


def _explain_missing_pythons() -> None:
    """Say what to install when a requested ``tests-3.X`` needs a Python that is not on PATH.

    nox itself only reports "Python interpreter 3.10 not found"; this runs when the noxfile is
    read, before nox looks the interpreter up.
    """
    import shutil
    import subprocess
    import sys

    def runs(version: str) -> bool:  # a shim (pyenv) can exist without the Python behind it
        exe = shutil.which(f"python{version}")
        if exe is None:
            return False
        try:
            return subprocess.run([exe, "-c", ""], capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    wanted = " ".join(sys.argv[1:])
    for version in PYTHONS:
        if f"tests-{version}" in wanted and not runs(version):
            print(
                f"nox: tests-{version} needs Python {version} as 'python{version}' on PATH, and "
                "there is none. Install it (python.org; 'uv python install "
                f"{version}'; 'pyenv install {version}' and 'pyenv shell' or 'pyenv local' it; "
                f"or your system's python{version} package), or run the tests with a Python you "
                "have: " + ", ".join(f"nox -s tests-{v}" for v in PYTHONS if runs(v)),
                file=sys.stderr,
            )


_explain_missing_pythons()


def _install_torch(session: nox.Session) -> None:
    session.install(TORCH)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Install the four packages (non-editable) and run every package's tests."""
    _install_torch(session)
    session.install(*PACKAGE_PATHS, *TEST_DEPS)
    session.run("python", "-m", "pytest", *PACKAGE_PATHS, *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """Ruff lint and format check over the whole repository, then the import contracts
    (package directions, loftr-core's layers, no cycles; ``[tool.importlinter]`` in the root
    ``pyproject.toml``), read from the sources without installing them."""
    session.install("ruff>=0.6", "import-linter>=2.1")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run(
        "lint-imports", env={"PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in SRC_PATHS)}
    )


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """Mypy over the sources of the four packages."""
    _install_torch(session)
    session.install(*PACKAGE_PATHS, "mypy>=1.10", "types-PyYAML", "types-tqdm")
    session.run("mypy", *SRC_PATHS)


@nox.session(python="3.11")
def build(session: nox.Session) -> None:
    """Build sdist + wheel per package; install each wheel alone in a fresh venv and import it."""
    session.install("build>=1.0")
    dist = ROOT / "dist"
    for name in PACKAGES:
        session.run("python", "-m", "build", "--outdir", str(dist), f"packages/{name}")
    tmp = Path(session.create_tmp())
    for name in PACKAGES:
        wheels = sorted(dist.glob(f"{name.replace('-', '_')}-*.whl"))
        if not wheels:
            session.error(f"no wheel for {name} in {dist}")
        env = tmp / f"venv-{name}"
        session.run("python", "-m", "venv", "--clear", str(env), external=True)
        py = str(env / "bin" / "python")
        session.run(py, "-m", "pip", "install", "-q", TORCH, external=True)
        # Siblings are not on the registry: let pip find them among the wheels just built.
        session.run(
            py,
            "-m",
            "pip",
            "install",
            "-q",
            "--find-links",
            str(dist),
            str(wheels[-1]),
            external=True,
        )
        module = name.replace("-", "_")
        session.run(
            py,
            "-c",
            f"import {module}; print({module}.__name__, {module}.__version__)",
            external=True,
        )


@nox.session(python="3.11")
def plugin_example(session: nox.Session) -> None:
    """Build the example attention plugin, pip-install it beside loftr-attention in a fresh venv,
    and show it is discovered by name, passes the conformance kit, and disappears when plugin
    autoloading is disabled."""
    _install_torch(session)
    wheels = Path(session.create_tmp()) / "plugin-wheels"
    session.run(
        "python",
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "-w",
        str(wheels),
        "packages/loftr-attention",
        "examples/attention-plugin",
    )
    # loftr-attention is not on the registry: pip resolves it among the wheels just built.
    session.install("--find-links", str(wheels), "loftr-attention-example-plugin")
    check = "examples/attention-plugin/check_installed.py"
    session.run("python", check, "present", env={"LOFTR_ATTENTION_DISABLE_PLUGIN_AUTOLOAD": ""})
    session.run("python", check, "absent", env={"LOFTR_ATTENTION_DISABLE_PLUGIN_AUTOLOAD": "1"})


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Our LoFTR vs kornia's on this machine: latency, peak RSS, matches, stages, FLOP/s.

    Without arguments: every size and mode, torch.compile included (slow: compile takes minutes
    on a small CPU); arguments after ``--`` replace the defaults, e.g. ``nox -s bench -- --quick``.
    """
    _install_torch(session)
    session.install(*PACKAGE_PATHS[:2], "kornia>=0.7", "opencv-python-headless>=4.8")
    session.run("python", "benchmarks/bench.py", *(session.posargs or ["--compile", "--markdown"]))


@nox.session(python="3.11")
def pairs_bench(session: nox.Session) -> None:
    """All pairs of 8 photos: kornia's per-pair loop vs ours per pair vs ours with the per-image
    feature cache (pairs/s, peak RSS, identical matches); arguments after ``--`` replace the
    defaults, e.g. ``nox -s pairs_bench -- --images 5``."""
    _install_torch(session)
    session.install(*PACKAGE_PATHS[:2], "kornia>=0.7", "opencv-python-headless>=4.8")
    session.run("python", "benchmarks/pairs_bench.py", *(session.posargs or ["--markdown"]))


@nox.session(python="3.11")
def export_bench(session: nox.Session) -> None:
    """The ONNX export at 640x480 (official architecture): onnxruntime's matches against
    PyTorch's, and its latency beside our eager model and kornia's; arguments after ``--``
    replace the defaults, e.g. ``nox -s export_bench -- --max-matches 2048``."""
    _install_torch(session)
    session.install(
        f"{PACKAGE_PATHS[1]}[onnx]", PACKAGE_PATHS[0], "kornia>=0.7", "opencv-python-headless>=4.8"
    )
    session.run("python", "benchmarks/export_bench.py", *(session.posargs or ["--markdown"]))
