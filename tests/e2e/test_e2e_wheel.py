"""`pip wheel .` builds a wheel whose installation is a working `balancer` (issue 16).

The wheel is built from a copy of the files a clone has (pyproject.toml, setup.py, README.md,
src/), so nothing of this checkout (compiled modules, egg-info, caches) can leak into it, and
installed into a fresh virtual environment; `balancer` then runs from there with the checkout
off the path, as a user's installation would.

To stay well under two minutes on a 2-core machine:
- the build sets BALANCER_PURE=1, so mypyc does not compile the data plane (a compiled build
  takes minutes; it is the same code, and `make native` plus the rest of the suite cover it);
- the build uses this environment's setuptools (`--no-build-isolation`: no download of the
  build requirements, which the Makefile installs into .venv);
- the new environment gets no dependencies from an index (`--no-deps`): a `.pth` file puts
  this environment's site-packages (uvloop, httptools, pydantic, ...) behind its own. A `.pth`
  line adds a folder without running that folder's `.pth` files, so the editable install of
  the checkout stays out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from tests.support import BalancerProcess
from tests.support.config import server_blocks
from tests.support.curl import curl
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
CLONE_FILES = ("pyproject.toml", "setup.py", "README.md")

pytestmark = pytest.mark.e2e


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(arg) for arg in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _clean_env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "PYTHONHOME")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `bin/` folder of a fresh virtual environment where the built wheel is installed."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in CLONE_FILES:
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "src",
        source / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info", "*.c", "build"),
    )
    dist = work / "dist"
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--wheel-dir",
        dist,
        source,
        cwd=work,
        env=_clean_env(BALANCER_PURE="1"),
    )
    (wheel,) = dist.glob("balancer-*.whl")

    venv = work / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work)
    python = venv / "bin" / "python"
    purelib = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=work).strip())
    install = ("-m", "pip", "--python", python, "install", "--quiet", "--no-deps", wheel)
    _run(sys.executable, *install, cwd=work, env=_clean_env())
    # After the install: this environment holds balancer's editable dist-info, which pip would
    # take for an installed balancer and skip the wheel.
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (purelib / "balancer-test-deps.pth").write_text("\n".join(sorted(ours)) + "\n")
    return venv / "bin"


def test_the_installed_package_is_the_wheel_not_the_checkout(installed: Path, tmp_path: Path):
    where = _run(
        installed / "python", "-c", "import balancer; print(balancer.__file__)", cwd=tmp_path, env=_clean_env()
    )
    assert Path(where.strip()).is_relative_to(installed.parent), where
    version = _run(installed / "balancer", "--version", cwd=tmp_path, env=_clean_env())
    assert version.startswith("balancer ")


def test_the_installed_balancer_checks_a_file(installed: Path, tmp_path: Path):
    good = tmp_path / "lb.toml"
    good.write_text(
        '[[frontend]]\nname = "www"\nbind = ":8080"\ndefault_backend = "web"\n\n'
        '[[backend]]\nname = "web"\n  [[backend.server]]\n  name = "s1"\n  address = "127.0.0.1:9001"\n'
    )
    assert _run(installed / "balancer", "check", "-c", good, cwd=tmp_path, env=_clean_env()) == (
        "configuration is valid\n"
    )

    bad = tmp_path / "bad.toml"
    bad.write_text("[global]\nworkerz = 2\n")
    done = subprocess.run(
        [installed / "balancer", "check", "-c", bad], capture_output=True, text=True, env=_clean_env(), timeout=60
    )
    assert done.returncode == 1
    assert f"{bad}:2: unknown key 'workerz'" in done.stdout


def test_the_installed_balancer_proxies_requests(installed: Path, tmp_path: Path, tagged):
    (server,) = tagged("s1")
    port = free_port()
    config = tmp_path / "lb.toml"
    config.write_text(
        f'[[frontend]]\nname = "www"\nbind = ["127.0.0.1:{port}"]\ndefault_backend = "web"\n\n'
        '[[backend]]\nname = "web"\n' + server_blocks([server])
    )
    with BalancerProcess(
        config, log_dir=tmp_path / "logs", program=[str(installed / "balancer")], unset=("PYTHONPATH",), cwd=tmp_path
    ) as proc:
        proc.wait_ready(port, timeout=30)
        answer = curl(f"http://127.0.0.1:{port}/")
        assert answer.status == 200
        assert answer.headers.get("server-name") == "s1"
        assert proc.stop(timeout=15) == 0, proc.output()
    assert "data plane: interpreted" in proc.output()
