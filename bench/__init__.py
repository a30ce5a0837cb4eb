"""Benchmarks: ``python -m bench [host|dispatch|report] …``. Each prints its figures and
ratios against a baseline measured in the same run, on this machine."""
