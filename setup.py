"""Builds the data-plane modules (balancer.native.COMPILED) into C extensions with mypyc,
and the modules written in C (balancer.native.C_EXTENSIONS).

Everything else about the package is in pyproject.toml. BALANCER_PURE=1 skips the
compilation; so does a machine without a C compiler or Python's headers, with a warning: the product is the
same code, interpreted and slower.
"""

import os
import re
import runpy
import shutil
import sys
import sysconfig

from setuptools import Extension, setup


def _has_version(header: str, name: str, least: int) -> bool:
    """Whether `header` is installed and its `# define NAME N` says N >= least."""
    folders = [sysconfig.get_config_var("INCLUDEDIR") or "", "/usr/include", "/usr/local/include"]
    for folder in folders:
        path = os.path.join(folder, header)
        if folder and os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as file:
                found = re.search(rf"^#\s*define\s+{name}\s+(\d+)", file.read(), re.MULTILINE)
            return found is not None and int(found[1]) >= least
    return False


def ext_modules() -> list:
    if os.environ.get("BALANCER_PURE") == "1":
        return []
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    if shutil.which(compiler) is None or not os.path.exists(headers):
        print(
            f"balancer: no C compiler ({compiler}) or no {headers}: the data plane stays interpreted", file=sys.stderr
        )
        return []
    from mypyc.build import mypycify

    here = os.path.dirname(os.path.abspath(__file__))
    native = runpy.run_path(os.path.join(here, "src", "balancer", "native.py"))
    paths = [os.path.join("src", path) for path in native["COMPILED"]]
    written_in_c = []
    for name, path in native["C_EXTENSIONS"]:
        libraries, needs = native["C_LIBRARIES"].get(name, ((), None))
        if needs is not None and not _has_version(*needs):
            header, version, least = needs
            print(
                f"balancer: no <{header}> with {version} >= {least}: {name} is not built, its fallback serves",
                file=sys.stderr,
            )
            continue
        written_in_c.append(
            Extension(name, [os.path.join("src", path)], libraries=list(libraries), extra_compile_args=["-O3"])
        )
    return mypycify(paths, opt_level="3", group_name=native["GROUP"]) + written_in_c


setup(ext_modules=ext_modules())
