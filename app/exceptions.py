"""Every exception the service raises, under one base class :class:`FraudError`.

Each subpackage raises only these, so callers can catch ``FraudError`` at the edge
(CLI, agents) and turn it into a one-line message or a dead-letter record.
"""

from __future__ import annotations

__all__ = [
    "FraudError",
    "ConfigError",
    "InvalidEventError",
    "DataError",
    "ModelError",
    "ModelIntegrityError",
    "ModelVersionError",
    "CompiledRuntimeError",
    "UnverifiedVersionError",
    "StackError",
    "BrokerUnavailableError",
    "BrokerAuthenticationError",
    "BrokerAuthorizationError",
    "RecoveryStalledError",
    "ObservabilityError",
    "RuleSetError",
    "ControlMessageError",
    "CaseError",
    "SinkDeliveryError",
    "ChangelogFormatError",
]


class FraudError(Exception):
    """Base class of every error raised by this project.

    ``exit_code``: the exit status of a command that ends on it (2: a usage or input
    error; 78, ``EX_CONFIG``: the service is configured wrong for its surroundings).
    """

    exit_code = 2


class ConfigError(FraudError):
    """A setting is missing or out of range."""


class InvalidEventError(FraudError):
    """An event on the wire failed validation.

    Parameters
    ----------
    reason : str
        A short, fixed code from :data:`app.events.REJECT_REASONS` (used as a metric
        label and in the dead-letter record).
    detail : str
        A human-readable explanation, at most a few hundred characters.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class DataError(FraudError):
    """An input file or date range given to the CLI cannot be used."""


class ModelError(FraudError):
    """A model artifact or model card cannot be loaded or used."""


class ModelIntegrityError(ModelError):
    """A model artifact's sha256 or feature names do not match its model card."""


class ModelVersionError(ModelError):
    """A model artifact was written by another scikit-learn version than the running one."""


class CompiledRuntimeError(ModelIntegrityError):
    """A model's compiled form cannot be built or loaded, or disagrees with scikit-learn
    on the model's validation rows (:mod:`app.scoring.compiled`)."""


class UnverifiedVersionError(ConfigError):
    """An installed library differs from the version the service's corrections of it were
    verified against (:mod:`app.compat`)."""


class StackError(FraudError):
    """The local stack (broker, Redis) cannot be started, stopped or reached."""


class BrokerUnavailableError(FraudError):
    """The Kafka broker cannot be reached, or refused a request (topic creation, delivery)."""


class BrokerAuthenticationError(BrokerUnavailableError):
    """The brokers refused the client's credentials (SASL) or the client refused the
    brokers' certificate (TLS): retrying cannot help; exit status 78."""

    exit_code = 78


class BrokerAuthorizationError(BrokerUnavailableError):
    """The brokers' ACLs refuse the client's principal an operation (write a topic,
    join a group, create a topic); nothing was written."""


class RecoveryStalledError(FraudError):
    """A worker's table recovery received nothing from a changelog partition through
    several rounds of resuming and seeking it: the worker exits (status 75) so that its
    supervisor restarts it; nothing is lost (what it has not processed is not
    committed)."""

    exit_code = 75


class ObservabilityError(FraudError):
    """Dashboards cannot be built, pushed to Grafana or checked against Prometheus."""


class RuleSetError(FraudError):
    """A rule set is invalid: unknown attribute, comparison that does not fit the
    attribute's type, duplicate rule id, bad outcome, or not valid JSON/YAML."""


class ControlMessageError(FraudError):
    """A message on the control or rules topic cannot be parsed or applied."""


class CaseError(FraudError):
    """A request that cannot become a case event.

    Parameters
    ----------
    reason : str
        ``unknown_case``, ``conflict`` (the case's status does not allow it) or
        ``invalid`` (bad analyst name, comment or key).
    detail : str
        One line for the analyst.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SinkDeliveryError(FraudError):
    """An alert sink did not confirm every message of a batch (it is retried).

    Parameters
    ----------
    message : str
        What failed, one line.
    confirmed : int, default=0
        How many messages at the start of the batch the sink did confirm (they are not
        sent again).
    """

    def __init__(self, message: str, confirmed: int = 0) -> None:
        super().__init__(message)
        self.confirmed = confirmed
class ChangelogFormatError(FraudError):
    """A table changelog record cannot be read (a batch record of an unknown format or
    truncated)."""
