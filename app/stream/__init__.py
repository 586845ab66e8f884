"""The stream shell: everything that talks to Faust, Kafka and the local broker stack.

The core (features, alignment, pipeline, scoring, decisions) is plain Python; this
package is the thin shell around it: the one Faust app (:mod:`.main`), its agents,
topics and tables (:mod:`.agents`, :mod:`.topics`, :mod:`.tables`), the corrections
of Faust's and aiokafka's private behaviour (:mod:`.streaming`; the versions they
were verified on are in :mod:`app.compat`), Kafka client options, topic creation and
true end offsets (:mod:`.offsets`), the followers of the control topics
(:mod:`.control`), the per-worker runtime (:mod:`.runtime`) and the local broker
stack (:mod:`.stack`, :mod:`.kafka_cluster`).

Deliberately empty: ``fraudctl`` imports :mod:`.stack` and :mod:`.offsets` without
loading Faust, so importing this package must not import the app.
"""
