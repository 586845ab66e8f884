"""The library versions the service's corrections of Faust and aiokafka were verified on.

Three modules replace or wrap *private* methods of faust-streaming, aiokafka and
mode-streaming, whose behaviour changes without notice between releases:

- :mod:`app.stream.streaming`: ``ProcessedOnlyEvent`` (Faust's ``Event.ack``), and
  ``guard_offset_gaps`` (Faust's ``Consumer._new_offset`` and its gap handling, the
  stream queues Faust clears on resume, aiokafka's ``seek_to_committed``),
  ``hand_over_on_wait_empty`` (Faust's ``Consumer.wait_empty``: held work is handed
  over when a rebalance or a stop begins), ``take_events_adaptive`` (Faust's
  ``Stream.take_events`` with a flush as soon as nothing more is queued),
  ``set_fetch_max_wait`` (Faust's ``AIOKafkaConsumerThread._create_worker_consumer``
  and aiokafka's ``Fetcher._get_actions_per_node``: the fetch wait adapts to lag) and
  ``register_tables_at_once`` (Faust's ``TableManager.on_start`` without its fixed
  one-second wait), ``keep_root_logger_level`` (Faust's
  ``Worker._setup_spinner_handler`` without its root logger at DEBUG) and
  ``limit_timer_overlap_warnings`` (mode's ``Timer.tick`` warning, once a minute per
  timer), ``seek_on_consumer_thread`` (Faust's ``ThreadDelegateConsumer._seek`` through
  the consumer thread, as aiokafka's fetcher is not thread-safe), ``idempotent_producer``
  (Faust's aiokafka ``Producer._settings_extra`` with ``enable_idempotence``).
- :mod:`app.stream.offsets`: table recovery's end offsets (Faust's
  ``Recovery._highwaters``/``_build_highwaters`` path and aiokafka's ``end_offsets``).
- :mod:`app.stream.tables`: ``PartitionedTable`` (Faust's choice of the changelog partition
  and of the RocksDB database from ``current_event``).

Each was verified, by the fault tests (``tests/test_faults.py``) and the broker-defect
tests (``tests/test_broker_defect.py``), against exactly the versions in
:data:`VERIFIED_VERSIONS`. ``python -m app worker`` checks the installed versions
before it starts (:func:`check_versions`) and refuses others with exit status 78,
unless ``ALLOW_UNVERIFIED_VERSIONS=true`` (for whoever re-verifies a new release; see
docs/operations.md, "Upgrading dependencies"). ``requirements.lock`` pins the same
versions (``tests/test_compat.py`` checks that the two agree).

Examples
--------
>>> check_versions({"aiokafka": "0.14.0"}, {"aiokafka": "0.14.0"})
[]
>>> check_versions({"aiokafka": "0.15.0"}, {"aiokafka": "0.14.0"})
['aiokafka 0.15.0 (verified: 0.14.0)']
>>> check_versions({}, {"aiokafka": "0.14.0"})
['aiokafka not installed (verified: 0.14.0)']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import metadata

from .exceptions import UnverifiedVersionError

__all__ = [
    "CORRECTION_MODULES",
    "VERIFIED_VERSIONS",
    "check_versions",
    "installed_versions",
    "require_verified_versions",
]

#: Distribution name -> the one version the corrections were verified against.
VERIFIED_VERSIONS: dict[str, str] = {
    "faust-streaming": "0.15.3",
    "aiokafka": "0.14.0",
    "mode-streaming": "0.7.1",
}
#: The modules holding the corrections, for messages.
CORRECTION_MODULES = ("app/stream/streaming.py", "app/stream/offsets.py", "app/stream/tables.py")


def installed_versions(names: Iterable[str] = VERIFIED_VERSIONS) -> dict[str, str]:
    """Installed version of each distribution in ``names``; absent ones are left out."""
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def check_versions(installed: Mapping[str, str], verified: Mapping[str, str]) -> list[str]:
    """Each verified distribution whose installed version differs, described in words.

    Parameters
    ----------
    installed : mapping of str to str
        Distribution name -> installed version (a missing name: not installed).
    verified : mapping of str to str
        Distribution name -> the version verified against.

    Returns
    -------
    list of str
        One ``"<name> <installed> (verified: <version>)"`` per mismatch, in the order of
        ``verified``; empty when every version matches exactly.
    """
    problems = []
    for name, wanted in verified.items():
        got = installed.get(name)
        if got is None:
            problems.append(f"{name} not installed (verified: {wanted})")
        elif got != wanted:
            problems.append(f"{name} {got} (verified: {wanted})")
    return problems


def require_verified_versions(allow_unverified: bool) -> list[str]:
    """Check the installed versions against :data:`VERIFIED_VERSIONS` before a worker starts.

    Parameters
    ----------
    allow_unverified : bool
        ``ALLOW_UNVERIFIED_VERSIONS``: return the mismatches instead of raising.

    Returns
    -------
    list of str
        The mismatches (empty when every version is verified); only non-empty with
        ``allow_unverified``.

    Raises
    ------
    UnverifiedVersionError
        A version differs and ``allow_unverified`` is false; the message is one line.
    """
    problems = check_versions(installed_versions(), VERIFIED_VERSIONS)
    if problems and not allow_unverified:
        raise UnverifiedVersionError(
            f"installed {'; '.join(problems)}: the corrections in "
            f"{', '.join(CORRECTION_MODULES)} are verified only on the versions in "
            "app/compat.py; install requirements.lock (make install), or set "
            "ALLOW_UNVERIFIED_VERSIONS=true while re-verifying them"
        )
    return problems
