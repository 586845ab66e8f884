"""Who is asking, for the review console: OpenID Connect sign-in, a proxy's header, or
the one local user; sealed session cookies and CSRF tokens.

Modes (``REVIEW_AUTH``):

- ``oidc``: ``GET /login`` sends the browser to the provider (authorization code with
  PKCE S256, ``state`` and ``nonce``; Authlib's httpx client); ``GET /auth/callback``
  trades the code for tokens, verifies the ID token (signature against the provider's
  JWKS, issuer, audience, expiry, nonce) and sets the session cookie; ``POST /logout``
  clears it. The analyst is the ID token's ``sub`` and ``name``; the role comes from
  ``REVIEW_ROLES`` or the groups claim.
- ``proxy``: the subject, name and groups come from headers an authenticating proxy sets,
  accepted only from ``REVIEW_TRUSTED_PROXIES``; the same header from another address is
  refused (403) and counted.
- ``none``: one person at this machine (the console binds loopback only): every action
  allowed, the name typed in the form.

The session cookie is sealed (encrypted and signed: ``cryptography``'s Fernet, key
``REVIEW_SESSION_KEY``) and holds the subject, name, role, a CSRF token and its expiry;
it is ``HttpOnly``, ``SameSite=Lax`` (the provider's redirect back is a top-level GET)
and ``Secure`` (named ``__Host-review_session``) unless ``REVIEW_COOKIE_SECURE=false``,
which is accepted only for plain http on a loopback address.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import urlencode, urlsplit

import orjson
from aiohttp import web
from cryptography.fernet import Fernet, InvalidToken

from ..config import Settings
from ..exceptions import ConfigError
from ..metrics import ReviewMetrics
from ..security import is_loopback_host
from .roles import Analyst, role_of

__all__ = ["Auth", "Analyst", "LOCAL_ANALYST", "check_auth_settings", "local_path"]

log = logging.getLogger(__name__)

#: The one local user of ``REVIEW_AUTH=none`` (the name comes from the form).
LOCAL_ANALYST = Analyst(subject="local", name="", role="lead")
_LOGIN_SECONDS = 600  # a sign-in started must come back within 10 minutes
_PUBLIC = ("/healthz", "/metrics", "/login", "/auth/callback", "/logout", "/signed-out", "/review.js")
_HTTP_TIMEOUT_SECONDS = 10.0


def _loopback_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "http" and is_loopback_host(parts.hostname or "")


def check_auth_settings(s: Settings, public_url: str) -> None:
    """Refuse settings a console cannot run safely with.

    Raises
    ------
    ConfigError
        ``oidc`` without issuer, client id or session key, or with a session key that is
        no Fernet key; ``proxy`` without trusted proxies (or with a bad address);
        ``REVIEW_COOKIE_SECURE=false`` for a console that is not plain http on loopback.
    """
    if s.review_auth == "oidc":
        missing = [n for n, v in (("REVIEW_OIDC_ISSUER", s.review_oidc_issuer),
                                  ("REVIEW_OIDC_CLIENT_ID", s.review_oidc_client_id),
                                  ("REVIEW_SESSION_KEY", s.review_session_key)) if not v]
        if missing:
            raise ConfigError(f"REVIEW_AUTH=oidc needs {', '.join(missing)}")
        try:
            Fernet(s.review_session_key.get_secret_value().encode())  # type: ignore[union-attr]
        except ValueError:
            raise ConfigError(
                "REVIEW_SESSION_KEY is no key: 32 random bytes in url-safe base64 "
                "(Fernet.generate_key())"
            ) from None
        if not s.review_cookie_secure and not _loopback_http(public_url):
            raise ConfigError(
                f"REVIEW_COOKIE_SECURE=false is only for plain http on loopback, not {public_url}"
            )
    if s.review_auth == "proxy":
        if not s.review_trusted_proxies:
            raise ConfigError("REVIEW_AUTH=proxy needs REVIEW_TRUSTED_PROXIES (the proxy's addresses)")
        for net in s.review_trusted_proxies:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ConfigError(f"REVIEW_TRUSTED_PROXIES: {net!r} is no address or network") from None


def local_path(value: str) -> str:
    """``value`` if a browser reads it as a path of this site, else ``"/"``.

    Browsers drop tabs and newlines from a URL and read ``\\`` as ``/``, so
    ``/<tab>/evil.example`` or ``/\\evil.example`` would lead to another site after the
    sign-in: anything but a plain path (printable ASCII, one leading ``/``) is refused.
    """
    if (not value.startswith("/") or value.startswith("//") or "\\" in value
            or any(not 0x20 < ord(ch) < 0x7F for ch in value)):
        return "/"
    return value


@dataclass
class _Provider:
    """The provider's discovery document and keys (fetched on first use)."""

    metadata: dict[str, Any]
    jwks: Any


class Auth:
    """The console's identity layer: a middleware, the sign-in routes, the CSRF check.

    Parameters
    ----------
    settings : Settings
        ``REVIEW_AUTH`` and the ``REVIEW_OIDC_*``, ``REVIEW_SESSION_*``,
        ``REVIEW_COOKIE_SECURE``, ``REVIEW_PROXY_*``, ``REVIEW_TRUSTED_PROXIES``,
        ``REVIEW_ROLES`` and ``REVIEW_*_GROUPS`` settings.
    public_url : str
        The console's address as browsers reach it (``scheme://host[:port]``).
    metrics : ReviewMetrics, optional
        Counts refused requests and sign-ins.
    """

    def __init__(self, settings: Settings, public_url: str, metrics: ReviewMetrics | None = None):
        check_auth_settings(settings, public_url)
        self.settings = settings
        self.mode = settings.review_auth
        self.public_url = public_url.rstrip("/")
        self.metrics = metrics
        key = settings.review_session_key
        self._fernet = Fernet(key.get_secret_value().encode()) if key else None
        secure = settings.review_cookie_secure
        self._secure = secure
        self.session_cookie = "__Host-review_session" if secure else "review_session"
        self.login_cookie = "__Host-review_login" if secure else "review_login"
        self._proxies = [ipaddress.ip_network(n, strict=False) for n in settings.review_trusted_proxies]
        self._csrf_key = secrets.token_bytes(32)
        self._provider: _Provider | None = None
        self._provider_lock = asyncio.Lock()

    # --- sealed cookies -------------------------------------------------------------

    def _seal(self, data: dict) -> str:
        assert self._fernet is not None
        return self._fernet.encrypt(orjson.dumps(data)).decode()

    def _unseal(self, token: str | None, ttl: int) -> dict | None:
        if not token or self._fernet is None:
            return None
        try:
            data = orjson.loads(self._fernet.decrypt(token.encode(), ttl=ttl))
        except (InvalidToken, orjson.JSONDecodeError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _set_cookie(self, response: web.StreamResponse, name: str, value: str, max_age: int) -> None:
        response.set_cookie(name, value, max_age=max_age, path="/", secure=self._secure,
                            httponly=True, samesite="Lax")

    # --- who is asking --------------------------------------------------------------

    def _count(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.requests_forbidden.labels(reason=reason).inc()

    def _from_proxy(self, request: web.Request) -> Analyst | None:
        s = self.settings
        subject = request.headers.get(s.review_proxy_user_header, "").strip()
        if not subject:
            return None
        if not self.trusted_peer(request):
            self._count("untrusted_proxy")
            log.warning("refused identity header %s from %s (no trusted proxy)",
                        s.review_proxy_user_header, request.remote)
            raise web.HTTPForbidden(text="identity header from an address that is no trusted proxy")
        name = request.headers.get(s.review_proxy_name_header, "").strip() or subject
        groups = [g.strip() for g in request.headers.get(s.review_proxy_groups_header, "").split(",") if g.strip()]
        return Analyst(subject, name, self._role(subject, groups))

    def trusted_peer(self, request: web.Request) -> bool:
        """Whether the request's peer address is one of ``REVIEW_TRUSTED_PROXIES``."""
        try:
            peer = ipaddress.ip_address(request.remote or "")
        except ValueError:
            return False
        return any(peer in net for net in self._proxies)

    def _role(self, subject: str, groups: list[str]) -> str | None:
        s = self.settings
        return role_of(subject, groups, s.review_roles, s.review_lead_groups, s.review_analyst_groups)

    def session(self, request: web.Request) -> dict | None:
        """The signed-in session of the request (``oidc``), None if none or expired."""
        data = self._unseal(request.cookies.get(self.session_cookie), self.settings.review_session_seconds)
        if data is None or not data.get("sub"):
            return None
        return data

    def analyst(self, request: web.Request) -> Analyst | None:
        """Who is asking, per the mode; None: nobody signed in."""
        if self.mode == "none":
            return LOCAL_ANALYST
        if self.mode == "proxy":
            return self._from_proxy(request)
        data = self.session(request)
        if data is None:
            return None
        return Analyst(data["sub"], data.get("name") or data["sub"], data.get("role"))

    def csrf_token(self, request: web.Request) -> str:
        """The token every form of this person carries (``oidc``: a random one in the
        session; ``proxy``, ``none``: an HMAC of the subject with a key of this process)."""
        if self.mode == "oidc":
            data = self.session(request)
            return data["csrf"] if data else ""
        who = request.get("analyst") or LOCAL_ANALYST
        return hmac.new(self._csrf_key, who.subject.encode(), "sha256").hexdigest()

    def check_csrf(self, request: web.Request, token: object) -> None:
        """Raise 403 (counted) unless ``token`` is this session's CSRF token."""
        expected = self.csrf_token(request)
        if not expected or not isinstance(token, str) or not hmac.compare_digest(token.encode(), expected.encode()):
            self._count("csrf")
            raise web.HTTPForbidden(text="the form's CSRF token is missing or stale: reload the page")

    def forbid(self, action: str, analyst: Analyst) -> None:
        """Count and log a refused action (the caller answers 403)."""
        self._count("role")
        log.info("refused %s for %s (role %s)", action, analyst.subject, analyst.role)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        """Sign-in required for every page but the public ones (``oidc``, ``proxy``)."""
        if request.path in _PUBLIC or self.mode == "none":
            return await handler(request)
        who = self.analyst(request)
        if who is None:
            if self.mode == "proxy":
                raise web.HTTPUnauthorized(text="no identity: reach the console through the proxy")
            if request.method == "GET":
                raise web.HTTPFound("/login?" + urlencode({"next": request.path_qs}))
            raise web.HTTPUnauthorized(text="signed out: sign in again")
        request["analyst"] = who
        return await handler(request)

    # --- OpenID Connect ------------------------------------------------------------------

    def _client(self):
        from authlib.integrations.httpx_client import AsyncOAuth2Client

        s = self.settings
        secret = s.review_oidc_client_secret
        return AsyncOAuth2Client(
            client_id=s.review_oidc_client_id,
            client_secret=secret.get_secret_value() if secret else None,
            token_endpoint_auth_method="client_secret_basic" if secret else "none",
            scope=s.review_oidc_scopes,
            redirect_uri=self.public_url + "/auth/callback",
            code_challenge_method="S256",
            timeout=_HTTP_TIMEOUT_SECONDS,
        )

    async def _provider_info(self, refresh_keys: bool = False) -> _Provider:
        import httpx
        from joserfc.jwk import KeySet

        async with self._provider_lock:
            if self._provider is None or refresh_keys:
                issuer = (self.settings.review_oidc_issuer or "").rstrip("/")
                async with httpx.AsyncClient(timeout=_HTTP_TIMEOUT_SECONDS) as http:
                    meta = (await http.get(issuer + "/.well-known/openid-configuration")).raise_for_status().json()
                    jwks = (await http.get(meta["jwks_uri"])).raise_for_status().json()
                self._provider = _Provider(meta, KeySet.import_key_set(jwks))
            return self._provider

    async def login(self, request: web.Request) -> web.Response:
        """``GET /login``: to the provider, with PKCE, state and nonce in a sealed cookie."""
        if self.mode != "oidc":
            raise web.HTTPNotFound()
        from authlib.common.security import generate_token

        try:
            provider = await self._provider_info()
        except Exception as exc:  # httpx errors, bad JSON: the provider is not reachable
            log.warning("identity provider unreachable: %s", exc)
            raise web.HTTPServiceUnavailable(text="the identity provider is unreachable; try again") from None
        nxt = local_path(request.query.get("next", "/"))
        verifier, state, nonce = generate_token(64), generate_token(32), generate_token(32)
        async with self._client() as client:
            url, _ = client.create_authorization_url(
                provider.metadata["authorization_endpoint"], state=state,
                code_verifier=verifier, nonce=nonce,
            )
        response = web.HTTPFound(url)
        self._set_cookie(response, self.login_cookie, self._seal(
            {"state": state, "verifier": verifier, "nonce": nonce, "next": nxt}), _LOGIN_SECONDS)
        raise response

    def _failed(self, why: str) -> web.HTTPException:
        if self.metrics is not None:
            self.metrics.sign_ins.labels(result="failed").inc()
        log.warning("sign-in failed: %s", why)
        return web.HTTPForbidden(text=f"sign-in failed: {why}; start again at /login")

    async def callback(self, request: web.Request) -> web.Response:
        """``GET /auth/callback``: code -> tokens; the ID token verified; the session set."""
        if self.mode != "oidc":
            raise web.HTTPNotFound()
        pending = self._unseal(request.cookies.get(self.login_cookie), _LOGIN_SECONDS)
        if pending is None:
            raise self._failed("no sign-in in progress (or it took longer than 10 minutes)")
        if "error" in request.query:
            raise self._failed(f"the provider answered {request.query['error'][:100]!r}")
        state, code = request.query.get("state", ""), request.query.get("code", "")
        if not code or not hmac.compare_digest(state.encode(), pending["state"].encode()):
            raise self._failed("state does not match")
        try:
            provider = await self._provider_info()
            async with self._client() as client:
                token = await client.fetch_token(
                    provider.metadata["token_endpoint"], code=code, code_verifier=pending["verifier"],
                )
            claims = await self._verify_id_token(token.get("id_token", ""), pending["nonce"])
        except web.HTTPException:
            raise
        except Exception as exc:  # OAuth errors, bad tokens, an unreachable provider
            raise self._failed(f"{type(exc).__name__}: {str(exc)[:200]}") from None
        subject = str(claims["sub"])
        name = str(claims.get("name") or claims.get("preferred_username") or subject)
        groups = claims.get(self.settings.review_groups_claim) or []
        if isinstance(groups, str):
            groups = [groups]
        role = self._role(subject, [str(g) for g in groups])
        if self.metrics is not None:
            self.metrics.sign_ins.labels(result="ok").inc()
        log.info("signed in: %s (role %s)", subject, role)
        response = web.HTTPFound(pending["next"])
        self._set_cookie(response, self.session_cookie, self._seal({
            "sub": subject, "name": name, "role": role, "csrf": secrets.token_urlsafe(32),
            "exp": int(time.time()) + self.settings.review_session_seconds,
        }), self.settings.review_session_seconds)
        response.del_cookie(self.login_cookie, path="/")
        raise response

    async def _verify_id_token(self, id_token: str, nonce: str) -> dict:
        from joserfc import jwt
        from joserfc.errors import JoseError

        s = self.settings
        provider = await self._provider_info()
        algorithms = provider.metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
        try:
            token = jwt.decode(id_token, provider.jwks, algorithms=algorithms)
        except JoseError:  # a new signing key: fetch the keys once more
            provider = await self._provider_info(refresh_keys=True)
            token = jwt.decode(id_token, provider.jwks, algorithms=algorithms)
        registry = jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": provider.metadata["issuer"]},
            aud={"essential": True, "value": s.review_oidc_client_id},
            sub={"essential": True},
            exp={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        registry.validate(token.claims)
        return dict(token.claims)

    async def logout(self, request: web.Request) -> web.Response:
        """``POST /logout`` (with the CSRF token): the session cookie cleared, then (OIDC)
        the provider's ``end_session_endpoint`` ends its session and sends the browser
        back to ``/signed-out``."""
        form = await request.post()
        target = "/signed-out"
        if self.mode == "oidc" and self.session(request) is not None:
            self.check_csrf(request, form.get("csrf"))
            try:
                end = (await self._provider_info()).metadata.get("end_session_endpoint")
            except Exception as exc:  # the provider unreachable: the console's session ends
                log.warning("identity provider unreachable at sign-out: %s", exc)
                end = None
            if end:
                target = end + ("&" if "?" in end else "?") + urlencode({
                    "client_id": self.settings.review_oidc_client_id,
                    "post_logout_redirect_uri": self.public_url + "/signed-out",
                })
        response = web.HTTPSeeOther(target)
        response.del_cookie(self.session_cookie, path="/")
        raise response
