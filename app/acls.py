"""Kafka ACLs of the service: one principal per component, with exactly the rights it needs.

Pure: the table of grants built from :class:`app.config.Settings` (topic names, app id)
and the components' user names; ``fraudctl acls plan`` prints it, ``fraudctl acls
apply`` writes it (:mod:`app.acl_admin`), ``docs/security.md`` renders it
(:func:`markdown_table`, checked by ``tests/test_acls.py``). On a cluster with
``allow.everyone.if.no.acl.found=false`` a principal can do nothing else.

What each component does with Kafka, and so the rights it holds:

* ``worker`` (``python -m app worker``): reads ``TRANSACTIONS_TOPIC`` and
  ``LABELS_TOPIC`` in its consumer group ``APP_ID``; writes ``SCORED_TOPIC``,
  ``ALERTS_TOPIC`` and ``DEAD_LETTER_TOPIC``; reads ``ALERTS_TOPIC`` back (after a crash,
  to find which reserved alerts were sent); reads ``CONTROL_TOPIC`` and ``RULES_TOPIC``
  without a group; owns every topic named ``<APP_ID>-...`` (table changelogs, the
  by-terminal topic, Faust's leader topic); creates the topics it uses when missing
  (its start and Faust declare them); reads the brokers' group session-timeout bounds
  (``DescribeConfigs`` on the cluster) at its start check.
* ``review-console`` (``fraudctl review serve``): reads and writes ``CASES_TOPIC``
  (creating it), reads ``ALERTS_TOPIC`` in its group ``<APP_ID>-case-review``, writes
  confirmed-fraud labels to ``LABELS_TOPIC``; with ``REVIEW_BLOCK_CONFIRMED`` also writes
  ``RULES_TOPIC`` (the card's block).
* ``alert-sinks`` (``fraudctl sinks run``): reads ``ALERTS_TOPIC`` in one group per sink,
  ``<APP_ID>-sink-<name>``.
* ``replay`` (``fraudctl replay``, the producers of transactions): writes
  ``TRANSACTIONS_TOPIC`` and ``LABELS_TOPIC``, creating them when missing.
* ``operator`` (``fraudctl models promote|rollback|shadow``, ``fraudctl rules apply``):
  writes ``CONTROL_TOPIC`` and ``RULES_TOPIC``, creating them when missing.

No component uses transactions (Faust's processing guarantee is at-least-once), so
none holds a transactional id. The worker's and the replay's producers are idempotent
where the broker grants it (``PRODUCER_IDEMPOTENCE``); since Apache Kafka 3.0 that
needs ``Write`` on a topic, not ``IdempotentWrite`` on the cluster.

Examples
--------
>>> from app.config import Settings
>>> grants = acl_grants(Settings())
>>> [g.resource for g in grants if g.component == "replay"]
['transactions', 'transaction-labels']
>>> sorted({op for b in bindings(grants) if b.principal == "User:replay" for op in [b.operation]})
['CREATE', 'DESCRIBE', 'WRITE']
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Settings
from .exceptions import ConfigError

__all__ = [
    "COMPONENTS",
    "OPERATIONS",
    "Grant",
    "AclBinding",
    "acl_grants",
    "bindings",
    "principals",
    "markdown_table",
    "allowed",
]

#: Components that hold a principal of their own, in the order of the table.
COMPONENTS = ("worker", "review-console", "alert-sinks", "replay", "operator")

#: Kafka's ACL operations used here, with their wire codes (``AclOperation``).
OPERATIONS = {
    "READ": 3,
    "WRITE": 4,
    "CREATE": 5,
    "DESCRIBE": 8,
    "DESCRIBE_CONFIGS": 10,
}
#: Kafka's resource types (``ResourceType``) and pattern types (``PatternType``).
RESOURCE_TYPES = {"topic": 2, "group": 3, "cluster": 4}
PATTERN_TYPES = {"literal": 3, "prefixed": 4}
#: The one resource name of the cluster resource.
CLUSTER_NAME = "kafka-cluster"

_READ = ("READ", "DESCRIBE")
_WRITE = ("WRITE", "DESCRIBE")


@dataclass(frozen=True)
class Grant:
    """One row of the table: a component's operations on one resource.

    Attributes
    ----------
    component : str
        One of :data:`COMPONENTS`.
    resource_type : str
        ``topic``, ``group`` or ``cluster``.
    resource : str
        Its name (a prefix when ``pattern`` is ``prefixed``).
    pattern : str
        ``literal`` or ``prefixed``.
    operations : tuple of str
        Keys of :data:`OPERATIONS`.
    why : str
        What the component does with it (the docs' table shows it).
    """

    component: str
    resource_type: str
    resource: str
    pattern: str
    operations: tuple[str, ...]
    why: str

    def __post_init__(self) -> None:
        if self.component not in COMPONENTS:
            raise ValueError(f"component {self.component!r}: expected one of {COMPONENTS}")
        if self.resource_type not in RESOURCE_TYPES:
            raise ValueError(f"resource_type {self.resource_type!r}: expected {list(RESOURCE_TYPES)}")
        if self.pattern not in PATTERN_TYPES:
            raise ValueError(f"pattern {self.pattern!r}: expected {list(PATTERN_TYPES)}")
        bad = [op for op in self.operations if op not in OPERATIONS]
        if bad or not self.operations:
            raise ValueError(f"operations {self.operations!r}: expected some of {list(OPERATIONS)}")


@dataclass(frozen=True, order=True)
class AclBinding:
    """One Kafka ACL: ``principal`` is ALLOWed ``operation`` on the resource, from any host."""

    principal: str
    resource_type: str
    resource: str
    pattern: str
    operation: str

    def describe(self) -> str:
        """``User:replay WRITE topic transactions`` (``prefixed`` names end with ``*``)."""
        name = self.resource + ("*" if self.pattern == "prefixed" else "")
        return f"{self.principal} {self.operation} {self.resource_type} {name}"


def acl_grants(settings: Settings) -> list[Grant]:
    """The table of every component's rights, from the settings' topic names and app id.

    Parameters
    ----------
    settings : Settings
        Reads ``app_id``, the ``*_topic`` names and ``review_block_confirmed`` (without
        it the console gets no right on ``RULES_TOPIC``).

    Returns
    -------
    list of Grant
        In the order of :data:`COMPONENTS`; a component's rows in a fixed order.

    Raises
    ------
    ConfigError
        A topic of the settings is named ``<APP_ID>-...``: under the worker's prefix.
    """
    s = settings
    app = s.app_id
    named = {
        "TRANSACTIONS_TOPIC": s.transactions_topic, "LABELS_TOPIC": s.labels_topic,
        "SCORED_TOPIC": s.scored_topic, "ALERTS_TOPIC": s.alerts_topic,
        "DEAD_LETTER_TOPIC": s.dead_letter_topic, "CONTROL_TOPIC": s.control_topic,
        "RULES_TOPIC": s.rules_topic, "CASES_TOPIC": s.cases_topic,
    }
    inside = [f"{k}={v}" for k, v in named.items() if v.startswith(f"{app}-")]
    if inside:
        # the worker owns every topic named <APP_ID>-...: it would get every right on these
        raise ConfigError(
            f"{inside[0]} starts with APP_ID={app}- (the worker's own topic prefix): the "
            "worker would hold every right on it; rename the topic or the app id"
        )
    rows: list[Grant] = []

    def add(component: str, rtype: str, name: str, ops: tuple[str, ...], why: str,
            pattern: str = "literal") -> None:
        rows.append(Grant(component, rtype, name, pattern, ops, why))

    w = "worker"
    add(w, "topic", s.transactions_topic, (*_READ, "CREATE"), "scores it (created if missing)")
    add(w, "topic", s.labels_topic, (*_READ, "CREATE"), "learns the verdicts (created if missing)")
    add(w, "topic", s.scored_topic, (*_WRITE, "CREATE"), "every scored transaction")
    add(w, "topic", s.alerts_topic, ("READ", *_WRITE, "CREATE"),
        "writes alerts; reads back reserved ones after a crash")
    add(w, "topic", s.dead_letter_topic, (*_WRITE, "CREATE"), "rejected records")
    add(w, "topic", s.control_topic, (*_READ, "CREATE"), "follows the model in force (no group)")
    add(w, "topic", s.rules_topic, (*_READ, "CREATE"), "follows the rule sets (no group)")
    add(w, "topic", f"{app}-", ("READ", "WRITE", "DESCRIBE", "CREATE"),
        "its changelogs, by-terminal and leader topics", pattern="prefixed")
    add(w, "group", app, _READ, "its consumer group")
    add(w, "cluster", CLUSTER_NAME, ("DESCRIBE_CONFIGS",),
        "start check: the brokers' session-timeout bounds")

    c = "review-console"
    add(c, "topic", s.cases_topic, ("READ", "WRITE", "DESCRIBE", "CREATE"),
        "the case events (created if missing)")
    add(c, "topic", s.alerts_topic, _READ, "opens cases from alerts")
    add(c, "topic", s.labels_topic, _WRITE, "labels of confirmed fraud")
    add(c, "group", s.review_group, _READ, "its consumer group on the alerts")
    if s.review_block_confirmed:
        add(c, "topic", s.rules_topic, _WRITE, "blocks a confirmed card (REVIEW_BLOCK_CONFIRMED)")

    k = "alert-sinks"
    add(k, "topic", s.alerts_topic, _READ, "delivers the alerts")
    add(k, "group", f"{app}-sink-", _READ, "one consumer group per sink", pattern="prefixed")

    r = "replay"
    add(r, "topic", s.transactions_topic, (*_WRITE, "CREATE"), "produces transactions")
    add(r, "topic", s.labels_topic, (*_WRITE, "CREATE"), "produces later verdicts")

    o = "operator"
    add(o, "topic", s.control_topic, (*_WRITE, "CREATE"), "fraudctl models promote, rollback, shadow")
    add(o, "topic", s.rules_topic, (*_WRITE, "CREATE"), "fraudctl rules apply")
    return rows


def principals(users: dict[str, str] | None = None) -> dict[str, str]:
    """``{component: "User:<name>"}``; a component's user name defaults to its own name.

    Raises
    ------
    ValueError
        An unknown component or an empty user name in ``users``.
    """
    users = users or {}
    unknown = set(users) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"unknown component {sorted(unknown)[0]!r}: expected one of {COMPONENTS}")
    empty = [c for c, u in users.items() if not u.strip()]
    if empty:
        raise ValueError(f"component {empty[0]!r}: empty user name")
    return {c: f"User:{users.get(c, c)}" for c in COMPONENTS}


def bindings(grants: list[Grant], users: dict[str, str] | None = None) -> list[AclBinding]:
    """Every ACL of ``grants`` (one per operation), sorted, without duplicates."""
    who = principals(users)
    return sorted({
        AclBinding(who[g.component], g.resource_type, g.resource, g.pattern, op)
        for g in grants
        for op in g.operations
    })


def allowed(grants: list[Grant], component: str, resource_type: str, name: str,
            operation: str) -> bool:
    """Whether ``component`` may do ``operation`` on the named resource, as Kafka's
    authorizer decides with these grants only (literal or prefix match; no deny rules).

    >>> from app.config import Settings
    >>> g = acl_grants(Settings())
    >>> allowed(g, "replay", "topic", "fraud-alerts", "WRITE")
    False
    >>> allowed(g, "worker", "topic", "fraud-detector-account_states-changelog", "WRITE")
    True
    """
    implied = {"DESCRIBE": {"READ", "WRITE", "DESCRIBE"}}.get(operation, {operation})
    for g in grants:
        if g.component != component or g.resource_type != resource_type:
            continue
        match = name.startswith(g.resource) if g.pattern == "prefixed" else name == g.resource
        if match and implied & set(g.operations):
            return True
    return False


def markdown_table(grants: list[Grant], users: dict[str, str] | None = None) -> str:
    """The table as Markdown: principal, resource, operations, why (one row per grant)."""
    who = principals(users)
    lines = [
        "| principal | resource | operations | what for |",
        "|---|---|---|---|",
    ]
    for g in grants:
        name = g.resource + ("*" if g.pattern == "prefixed" else "")
        lines.append(
            f"| `{who[g.component]}` | {g.resource_type} `{name}` | "
            f"{', '.join(g.operations)} | {g.why} |"
        )
    return "\n".join(lines)
