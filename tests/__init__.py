"""The keras_cc test suite; a package so that ``tests.reference`` and
``tests.helpers`` import the same way in tests and in ``python -m
benchmarks.<name>`` run from the repository root."""
