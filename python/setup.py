"""Builds the `tandem._tandem` extension with the project's CMake build (target tandem_python).

Reuses an existing build directory when there is one (TANDEM_BUILD_DIR, else <repo>/build/release),
so `pip install` compiles only what that build has not; otherwise configures a fresh one in
<repo>/build/python-pip. Needs the project's dependencies (deploy/install-deps.sh); no network.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build_dir = Path(os.environ.get("TANDEM_BUILD_DIR", REPO / "build" / "release"))
        if not (build_dir / "CMakeCache.txt").exists():
            build_dir = REPO / "build" / "python-pip"
            subprocess.check_call([
                "cmake", "-S", str(REPO), "-B", str(build_dir), "-G", "Ninja",
                "-DCMAKE_BUILD_TYPE=Release", "-DTANDEM_PYTHON=ON",
                f"-DTANDEM_PYTHON_EXECUTABLE={sys.executable}",
                "-DTANDEM_BUILD_TESTS=OFF", "-DTANDEM_BUILD_BENCH=OFF",
            ])
        subprocess.check_call(["cmake", "--build", str(build_dir), "--target", "tandem_python"])
        built = sorted((build_dir / "python" / "tandem").glob("_tandem*.so"))
        if not built:
            raise RuntimeError(f"tandem_python built no _tandem*.so in {build_dir}/python/tandem "
                               "(is pybind11-dev installed? see docs/python.md)")
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built[-1], target)


setup(ext_modules=[CMakeExtension("tandem._tandem")], cmdclass={"build_ext": CMakeBuild})
