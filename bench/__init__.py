"""The performance harness: ``fraudctl bench`` (see docs/performance.md).

* :mod:`bench.harness`: the measurements (bare aiokafka, bare Faust, the project's
  worker, latency at a fixed rate, memory per account, scale-out) and their results.
* :mod:`bench.procs`: worker processes started by the harness and their ``/metrics``.
* :mod:`bench.data`: the transactions produced (shared handbook file, simulated, or
  synthetic accounts), the probes and the producers.
* :mod:`bench.bare_faust`: the reference Faust app, an agent that only iterates.
* :mod:`bench.clients`: the measuring clients inside the harness (bare aiokafka, the
  paced producer and output consumer of the latency phase).
* :mod:`bench.profiling`: a py-spy profile of a worker and its top entries.

The harness treats the project's worker as a black box: it starts ``python -m app
worker`` with its settings in the environment and reads only topics and ``/metrics``.
"""
