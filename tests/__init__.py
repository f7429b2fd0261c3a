"""The test suite, one package per layer: functional/ explainers/ render/ sinks/ callbacks/ cli/ system/.

Shared plain helpers are in helpers.py, fixtures in conftest.py; tests/data/ holds checked-in test files.
"""
