"""opensipy package: the core (opensipy/), the modules (modules/, installed as
the package ``opensipy_modules``) and the C extensions built by cffi from
native/."""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "opensipy", "__init__.py")) as f:
    VERSION = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

# Each native library has its own cffi build script; list only those that
# exist so that the tree stays installable while a library is being added.
CFFI_MODULES = [
    f"native/{name}:ffibuilder"
    for name in ("build_sipparser.py", "build_shm.py", "build_tm.py")
    if os.path.exists(os.path.join(HERE, "native", name))
]

modules_pkgs = ["opensipy_modules"] + [
    "opensipy_modules." + p for p in find_packages("modules")
]

setup(
    name="opensipy",
    version=VERSION,
    description="A multiprocess pre-fork SIP server in Python, modelled on OpenSIPS",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    license="GPL-2.0-or-later",
    python_requires=">=3.9",
    packages=find_packages(include=["opensipy", "opensipy.*"]) + modules_pkgs,
    package_dir={"opensipy_modules": "modules"},
    package_data={
        "opensipy_modules": ["*/README.md"],
    },
    # <prefix>/etc/opensipy/opensipy.cfg is opensipy's default -f; the
    # share/opensipy copies are what `opensipyctl setup` installs
    data_files=[("etc/opensipy", ["etc/opensipy/opensipy.cfg"]),
                ("share/opensipy", ["etc/opensipy/opensipy.cfg",
                                    "etc/opensipy/opensipy.service",
                                    "etc/opensipy/opensipyctl.cfg"])],
    setup_requires=["cffi>=1.15"],
    cffi_modules=CFFI_MODULES,
    install_requires=[
        "cffi>=1.15",
        "setproctitle>=1.3",
        "psutil>=5.9",
        "multiprocess>=0.70",
        # RFC 3263 (NAPTR/SRV) and TTL-aware, time-bounded lookups: the
        # system resolver gives neither (opensipy/resolve.py)
        "dnspython>=2.4",
    ],
    extras_require={
        # db_postgres: psycopg 3 with its bundled libpq build
        "postgres": ["psycopg[binary]>=3.1"],
        # cachedb_redis
        "redis": ["redis>=4.5"],
        # modules/httpd: the HTTP/1.1 protocol machine under its event loop
        "httpd": ["h11>=0.14"],
        "test": [
            "h11>=0.14",
            # tests read /metrics with Prometheus's own parser
            "prometheus-client>=0.17",
            "pytest>=7",
            "pytest-benchmark>=4",
            "pytest-timeout>=2.1",
            "hypothesis>=6",
            # the real OpenSIPS MI clients, driven against opensipy's MI
            "opensips>=0.1.11",
            "opensipscli>=0.4",
            # opensipyctl -o yaml
            "PyYAML>=5",
            # the storage tests drive db_postgres and cachedb_redis against
            # real PostgreSQL and Redis servers
            "psycopg[binary]>=3.1",
            "redis>=4.5",
        ],
    },
    entry_points={
        "console_scripts": [
            "opensipy=opensipy.cli:main",
            "opensipyctl=opensipy.ctl.main:main",
        ],
    },
)
