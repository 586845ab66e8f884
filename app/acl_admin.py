"""Read and write the service's Kafka ACLs (``fraudctl acls apply``): the shell of
:mod:`app.acls`.

aiokafka's admin client (0.14) has no ``create_acls``/``describe_acls`` method, but
its protocol module has the requests (``aiokafka.protocol.admin.CreateAclsRequest``,
``DescribeAclsRequest``: versions 1, with prefixed patterns; Kafka 2.0 and later). They
are sent with :meth:`aiokafka.client.AIOKafkaClient.send` to one broker, which forwards
them to the KRaft controller. One ACL per CreateAcls request: aiokafka's request builds
a one-element list. Creating an ACL that exists changes nothing on the broker, and
only the missing ones are sent, so :func:`apply_acls` is idempotent.

The principal that applies them needs ``ALTER`` on the cluster (or is a super user);
``DESCRIBE`` on the cluster to read them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .acls import OPERATIONS, PATTERN_TYPES, RESOURCE_TYPES, AclBinding
from .config import Settings
from .exceptions import BrokerAuthorizationError, BrokerUnavailableError

__all__ = ["AclApplyResult", "describe_acls", "apply_acls"]

_ALLOW = 3  # AclPermissionType.ALLOW
_ANY = 1  # ResourceType / PatternType / AclOperation / AclPermissionType ANY
_ANY_HOST = "*"

_OPERATION_NAMES = {v: k for k, v in OPERATIONS.items()}
_RESOURCE_NAMES = {v: k for k, v in RESOURCE_TYPES.items()}
_PATTERN_NAMES = {v: k for k, v in PATTERN_TYPES.items()}


@dataclass(frozen=True)
class AclApplyResult:
    """What :func:`apply_acls` found and did."""

    created: list[AclBinding]
    present: list[AclBinding]


async def _client(settings: Settings):
    from aiokafka.client import AIOKafkaClient
    from aiokafka.errors import KafkaError

    from .stream.offsets import broker_error, client_options

    client = AIOKafkaClient(**client_options(settings), request_timeout_ms=10_000)
    try:
        await client.bootstrap()
    except KafkaError as exc:
        await client.close()
        raise await broker_error(settings, exc) from None
    return client


def _raise_for(code: int, message: str | None, what: str) -> None:
    if code == 0:
        return
    from aiokafka.errors import for_code

    name = for_code(code).__name__
    if code in (31, 30, 29):  # cluster/group/topic authorization failed
        raise BrokerAuthorizationError(
            f"{what}: not authorized ({name}): apply ACLs as a super user or a principal "
            "with ALTER on the cluster"
        )
    raise BrokerUnavailableError(f"{what}: error {code} {name} {message or ''}".rstrip())


async def describe_acls(settings: Settings) -> set[AclBinding]:
    """Every ALLOW ACL of the cluster whose resource type, pattern and operation
    :mod:`app.acls` knows (others are left out).

    Raises
    ------
    BrokerUnavailableError
        The broker cannot be reached or fails the request (authentication failure:
        :class:`~app.exceptions.BrokerAuthenticationError`).
    BrokerAuthorizationError
        The settings' principal may not describe ACLs.
    """
    from aiokafka.protocol.admin import DescribeAclsRequest

    client = await _client(settings)
    try:
        request = DescribeAclsRequest(_ANY, None, _ANY, None, None, _ANY, _ALLOW)
        response = await client.send(client.get_random_node(), request)
    finally:
        await client.close()
    _raise_for(response.error_code, response.error_message, "describing ACLs")
    found = set()
    for rtype, name, pattern, acls in response.resources:
        for principal, host, operation, permission in acls:
            known = (
                rtype in _RESOURCE_NAMES and pattern in _PATTERN_NAMES
                and operation in _OPERATION_NAMES
            )
            if known and permission == _ALLOW and host == _ANY_HOST:
                found.add(AclBinding(principal, _RESOURCE_NAMES[rtype], name,
                                     _PATTERN_NAMES[pattern], _OPERATION_NAMES[operation]))
    return found


async def apply_acls(settings: Settings, wanted: list[AclBinding]) -> AclApplyResult:
    """Create the ACLs of ``wanted`` that the cluster lacks (ALLOW, from any host).

    Returns
    -------
    AclApplyResult
        The ones created and the ones already there.

    Raises
    ------
    BrokerUnavailableError
        The broker cannot be reached or refuses an ACL (the ones created before it stay:
        running the command again completes them).
    BrokerAuthorizationError
        The settings' principal may not create ACLs.
    """
    from aiokafka.protocol.admin import CreateAclsRequest

    present = await describe_acls(settings)
    missing = [b for b in wanted if b not in present]
    client = await _client(settings)
    try:
        node = client.get_random_node()
        for b in missing:
            request = CreateAclsRequest(
                RESOURCE_TYPES[b.resource_type], b.resource, PATTERN_TYPES[b.pattern],
                b.principal, _ANY_HOST, OPERATIONS[b.operation], _ALLOW,
            )
            response = await client.send(node, request)
            for code, message in response.creation_responses:
                _raise_for(code, message, f"creating ACL {b.describe()}")
    finally:
        await client.close()
    return AclApplyResult(created=missing, present=[b for b in wanted if b in present])
