"""Shared by the interop tests: the C++ helper programs the build makes, found through the
environment variables CTest sets (cmake/python_tests.cmake)."""
import os

import pytest


def helper_program(variable, program):
    """The path in $variable, which must name the built helper `program`. Missing: a failure under
    CTest's driver (DTN_INTEROP_STRICT: the build made it), a skip when pytest runs by hand."""
    path = os.environ.get(variable)
    if not path or not os.access(path, os.X_OK):
        why = f"{variable} does not name the built {program} program"
        if os.environ.get("DTN_INTEROP_STRICT"):
            pytest.fail(why)
        pytest.skip(why)
    return path
