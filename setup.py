"""Builds the Cython fast path. Everything else is plain Python described in pyproject.toml."""

import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

# C libraries each module links beyond Python: OpenSSL's libcrypto for QUIC Initial decryption,
# libnetfilter_queue (which brings libmnl) for the NFQUEUE consumer's netlink messages.
LIBRARIES = {"quic": ["crypto"], "nfqueue": ["netfilter_queue"]}
MODULES = sorted(p.stem for p in Path("fastpath").glob("*.pyx"))
# FASTPATH_MODULES=dns,tls rebuilds only those (quick iteration while other modules are being edited).
if os.environ.get("FASTPATH_MODULES"):
    MODULES = [m for m in MODULES if m in os.environ["FASTPATH_MODULES"].split(",")]

extensions = [
    Extension(
        f"fastpath.{name}",
        [f"fastpath/{name}.pyx"],
        libraries=LIBRARIES.get(name, []),
        extra_compile_args=["-O3"],
    )
    for name in MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
