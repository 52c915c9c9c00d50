"""The alert worker (``ept worker``): Faust wiring, its two stages and their I/O.

``service`` is the process; ``collect_stage`` turns event batches into signals,
``evaluate_stage`` judges them and publishes notices; everything they decide is in
:mod:`ept.processors.worker.logic`, which loads no I/O library.
"""
