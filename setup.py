"""Only the optional C accelerators; everything else is in pyproject.toml.

``optional=True``: when one cannot be built (no compiler, no Python headers) the install goes on
and the Python code it speeds up runs instead, with the same results: ``_fastjournal`` decodes
journals for ``cocli_fs.record``, ``_fastfront`` reads front matter for ``cocli_fs.frontmatter``.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "cocli_fs._fastjournal",
            sources=["cocli_fs/_fastjournal.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(
            "cocli_fs._fastfront",
            sources=["cocli_fs/_fastfront.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ]
)
