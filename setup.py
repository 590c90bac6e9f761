"""The one compiled module: adperf/_pseudonym.c (HMAC pseudonyms, see adperf/pseudonym.py).

Optional: without a C compiler or OpenSSL's headers (Debian: libssl-dev) the install goes on
and adperf.pseudonym uses its pure-Python path (same values, several times slower).
Everything else about the package is in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "adperf._pseudonym",
            ["adperf/_pseudonym.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-Wall"],
            optional=True,
        )
    ]
)
