"""Who may do what in case review, pure: analysts, roles and the actions they allow.

An :class:`Analyst` is a signed-in person (the OpenID Connect token's subject and name,
or the identity an authenticating proxy vouches for). Their role comes from a mapping
in the settings (subject -> role) or else from their groups:

- ``analyst``: comment, assign, confirm, dismiss;
- ``lead``: also reopen a closed case and block a card.

Examples
--------
>>> ann = Analyst(subject="u-17", name="Ann Analyst", role="analyst")
>>> ann.actor, ann.may("confirm"), ann.may("reopen")
('Ann Analyst <u-17>', True, False)
>>> role_of("u-9", ["fraud-leads"], roles={}, lead_groups=["fraud-leads"],
...         analyst_groups=["fraud-analysts"])
'lead'
>>> role_of("u-9", ["fraud-leads"], roles={"u-9": "analyst"}, lead_groups=["fraud-leads"],
...         analyst_groups=[])  # the mapping wins over the groups
'analyst'
>>> role_of("u-1", ["staff"], roles={}, lead_groups=["fraud-leads"], analyst_groups=[]) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from ..events import MAX_ACTOR_CHARS

__all__ = ["ROLES", "ROLE_ACTIONS", "Analyst", "role_of", "allowed_actions"]

#: Every role, least rights first.
ROLES: tuple[str, ...] = ("analyst", "lead")
#: Role -> the actions of :data:`app.cases.model.ACTIONS` it may ask for.
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "analyst": frozenset({"comment", "assign", "confirm", "dismiss"}),
    "lead": frozenset({"comment", "assign", "confirm", "dismiss", "reopen", "block"}),
}


@dataclass(frozen=True)
class Analyst:
    """A signed-in person.

    Attributes
    ----------
    subject : str
        Stable id from the identity provider (the token's ``sub``) or the proxy's header.
    name : str
        Display name (the token's ``name``, else ``preferred_username``, else the subject).
    role : str or None
        One of :data:`ROLES`; None: signed in but given no role (may only read).
    """

    subject: str
    name: str
    role: str | None

    @property
    def actor(self) -> str:
        """``"name <subject>"`` as recorded on case events (at most ``MAX_ACTOR_CHARS``;
        the name is shortened, never the subject)."""
        name = " ".join(self.name.split()) or self.subject
        if name == self.subject:
            return self.subject[:MAX_ACTOR_CHARS]
        room = MAX_ACTOR_CHARS - len(self.subject) - 3
        if room < 1:
            return self.subject[:MAX_ACTOR_CHARS]
        return f"{name[:room]} <{self.subject}>"

    def may(self, action: str) -> bool:
        """Whether the role allows ``action`` (a key of ``ACTIONS``)."""
        return self.role is not None and action in ROLE_ACTIONS.get(self.role, frozenset())


def role_of(
    subject: str,
    groups: Iterable[str],
    roles: Mapping[str, str],
    lead_groups: Iterable[str],
    analyst_groups: Iterable[str],
) -> str | None:
    """The role of a person.

    Parameters
    ----------
    subject : str
    groups : iterable of str
        From the token's groups claim (or the proxy's groups header).
    roles : mapping of str to str
        Subject -> role; wins over the groups.
    lead_groups, analyst_groups : iterable of str
        Groups that make a lead, an analyst (lead first).

    Returns
    -------
    str or None
        A role of :data:`ROLES`, or None (no role: the console only shows cases).

    Raises
    ------
    ValueError
        ``roles`` names a role that is not one of :data:`ROLES`.
    """
    if subject in roles:
        role = roles[subject]
        if role not in ROLES:
            raise ValueError(f"role {role!r} of {subject!r}: expected one of {ROLES}")
        return role
    held = set(groups)
    if held & set(lead_groups):
        return "lead"
    if held & set(analyst_groups):
        return "analyst"
    return None


def allowed_actions(analyst: Analyst, actions: Iterable[str]) -> list[str]:
    """The subset of ``actions`` the analyst's role allows, in the given order."""
    return [a for a in actions if analyst.may(a)]
