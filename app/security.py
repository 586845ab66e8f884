"""TLS contexts built from :class:`app.config.Settings` (no environment reads here).

Secrets (``KAFKA_SASL_PASSWORD``, ``REDIS_PASSWORD``, a password inside ``REDIS_URL``)
are :class:`pydantic.SecretStr`: their ``repr`` and ``str`` are ``**********``, and only
the code that opens a connection calls ``get_secret_value()``.

Examples
--------
>>> from app.config import Settings
>>> s = Settings(kafka_sasl_username="svc", kafka_sasl_password="hunter2",
...              redis_url="redis://:pw@127.0.0.1:6379/0")
>>> "hunter2" in repr(s) or ":pw@" in repr(s)
False
>>> kafka_ssl_context(s) is None
True
"""

from __future__ import annotations

import ipaddress
import ssl

__all__ = ["kafka_ssl_context", "is_loopback_host"]


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP address (127.0.0.0/8, ::1).

    >>> is_loopback_host("127.0.0.2"), is_loopback_host("localhost"), is_loopback_host("0.0.0.0")
    (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def kafka_ssl_context(settings) -> ssl.SSLContext | None:
    """TLS context for the brokers when ``KAFKA_SSL`` is set, else None.

    The brokers' certificates are verified (hostname included) against
    ``KAFKA_SSL_CA_FILE`` (default: the system's CAs); ``KAFKA_SSL_CERT_FILE`` and
    ``KAFKA_SSL_KEY_FILE`` add a client certificate (mutual TLS).
    """
    if not settings.kafka_ssl:
        return None
    ctx = ssl.create_default_context(
        cafile=str(settings.kafka_ssl_ca_file) if settings.kafka_ssl_ca_file else None
    )
    if settings.kafka_ssl_cert_file is not None:
        ctx.load_cert_chain(
            str(settings.kafka_ssl_cert_file),
            str(settings.kafka_ssl_key_file) if settings.kafka_ssl_key_file else None,
        )
    return ctx
