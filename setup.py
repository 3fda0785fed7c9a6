"""Only the optional C accelerator for journal replay; everything else is in pyproject.toml.

``optional=True``: when it cannot be built (no compiler, no Python headers) the install goes on
and ``cocli_fs.record`` uses its pure-Python decoder, which gives the same results.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "cocli_fs._fastjournal",
            sources=["cocli_fs/_fastjournal.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
