"""The one part of the build that pyproject.toml cannot say: the optional C extension
vfioctl._speedups (the register and prepared-mapping hot paths, issue #14). ``optional``: when
no compiler or no Python headers are there, the install goes on without it and vfioctl runs
those paths in pure Python."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("vfioctl._speedups", ["vfioctl/_speedups.c"], optional=True,
                             extra_compile_args=["-Wall", "-Wextra", "-Wno-missing-field-initializers"])])
