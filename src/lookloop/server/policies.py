"""Who may do what over HTTP: every authorisation rule of the API, in one place.

``server/auth.py`` says who is calling (a token → a ``Principal``); this module says what that caller may
do. Routers load what a request is about, hand it to ``Access`` and call a service with what comes back:
they never compare roles or device ids themselves.

Each rule raises the error the API has always answered with:

* ``Unauthorized`` (401): no token where one is needed;
* ``Forbidden`` (403): a known caller who may not do this;
* ``NotFound`` (404): a stranger reading someone's data learns nothing about whether it exists.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated, Protocol

from fastapi import Depends, Header

from lookloop.config import Settings
from lookloop.domain import AskRecord
from lookloop.errors import BadInput, Forbidden, NotFound, Unauthorized
from lookloop.humans.accounts import ROLES, Principal
from lookloop.humans.queue import QueueItem
from lookloop.memory.store import NoteSession
from lookloop.privacy import audit
from lookloop.server.auth import current_principal
from lookloop.store import idempotency
from lookloop.store.db import Database
from lookloop.system import Lookloop

__all__ = ["Access", "idempotency_key", "require"]

ANONYMOUS = "anonymous"  # the device id of asks and notes sent without a token


class WearerDevices(Protocol):
    def devices_of_wearer(self, wearer_id: str) -> list[str]: ...


class HeldReviews(Protocol):
    """What the review queue knows about who holds what (``lookloop.humans.queue.ReviewQueue``)."""

    def get(self, item_id: str) -> QueueItem: ...

    def held_item(self, item_id: str, account_id: str) -> QueueItem | None: ...

    def holds_ask(self, account_id: str, ask_id: str) -> bool: ...


class RevealGrants(Protocol):
    def reveal_granted(self, account_id: str) -> bool: ...


class Access:
    """The access policy. Role gates are static (they need only the caller); the rest need a little state:
    which devices a wearer owns, which review items a reviewer holds, who was granted the reveal permission."""

    def __init__(
        self,
        settings: Settings,
        *,
        wearers: WearerDevices,
        reviews: HeldReviews,
        grants: RevealGrants,
        audit_db: Database,
    ) -> None:
        self.settings = settings
        self.wearers = wearers
        self.reviews = reviews
        self.grants = grants
        self.audit_db = audit_db  # refused reveals are audited too

    @classmethod
    def of(cls, system: Lookloop) -> Access:
        return cls(system.settings, wearers=system.humans.accounts, reviews=system.humans.queue,
                   grants=system.privacy, audit_db=system.db)

    # -- roles --------------------------------------------------------------------------------------------

    @staticmethod
    def role(principal: Principal | None, roles: tuple[str, ...]) -> Principal:
        """The caller when signed in with one of ``roles``; an operator passes every reviewer check."""
        if principal is None:
            raise Unauthorized("sign in first: send 'Authorization: Bearer <token>'")
        if not principal.allows(*roles):
            raise Forbidden(f"this needs the role {' or '.join(roles)}; you are {principal.role}")
        return principal

    @staticmethod
    def stream_role(principal: Principal, *roles: str) -> Principal:
        """The role gate of a WebSocket stream (its caller is already known: sockets carry ``?token=``)."""
        if roles and not principal.allows(*roles):
            raise Forbidden(f"this stream needs the role {' or '.join(roles)}")
        return principal

    def metrics_reader(self, token: str | None, principal: Callable[[str], Principal]) -> None:
        """Who may read /metrics: the configured metrics token (a scraper), or an operator; never anonymous."""
        configured = self.settings.metrics_token
        if token and configured and hmac.compare_digest(token.encode(), configured.encode()):
            return
        self.role(principal(token) if token else None, ("operator",))

    # -- asks ---------------------------------------------------------------------------------------------

    def ask_device(self, principal: Principal | None, requested: str | None) -> str:
        """The device an ask (or a note) is recorded under: the token's device, an operator's choice, or
        'anonymous'."""
        if principal is None:
            if not self.settings.allow_anonymous_asks:
                raise Unauthorized("asks need a device token: send 'Authorization: Bearer dev_…'")
            return ANONYMOUS
        if principal.kind == "device":
            assert principal.device_id is not None
            if requested not in (None, "", ANONYMOUS, principal.device_id):
                raise Forbidden("a device asks only as itself")
            return principal.device_id
        if principal.allows("operator"):
            return requested or ANONYMOUS
        raise Forbidden("reviewers do not ask; use a device token")

    def listed_device(self, principal: Principal, requested: str | None) -> str | None:
        """Whose asks a listing shows: a device only its own; an operator whichever it asks for (None: all)."""
        if principal.kind == "device":
            if requested not in (None, principal.device_id):
                raise Forbidden("a device lists only its own asks")
            return principal.device_id
        return requested

    def read_ask(self, principal: Principal | None, record: AskRecord) -> AskRecord:
        """Who may read an ask: anyone holding an anonymous ask's id, its wearer's devices, operators, and a
        reviewer while they hold the ask's review item (it was offered to them, or they claimed it)."""
        if record.device_id == ANONYMOUS:
            return record
        if principal is None:
            raise Unauthorized("sign in to read this ask")
        if principal.kind == "account" and principal.allows("operator"):
            return record
        if self._reviewer_holds(principal, record):
            return record  # reviewers see only what the queue gives them (and frames only redacted)
        if self._owns(principal, record):
            return record
        # Not 403: a stranger learns nothing about whether the id exists.
        raise NotFound("no such ask")

    def correct_route(self, principal: Principal | None, record: AskRecord) -> AskRecord:
        """Who may correct the skill an ask went to (it retrains the router for everyone): the ask's owner
        (its wearer's devices) or an operator. Anonymous asks belong to nobody: only an operator."""
        if principal is None:
            raise Unauthorized("sign in to correct a route")
        if principal.allows("operator") and principal.kind == "account":
            return record
        if record.device_id != ANONYMOUS and self._owns(principal, record):
            return record
        if principal.kind == "account":
            raise Forbidden("a route is corrected by the wearer who asked or by an operator")
        raise NotFound("no such ask")

    def label_source(self, principal: Principal | None, record: AskRecord, requested: str | None) -> str:
        """Who may label a readable ask, and what the label counts as (its source is the caller's, never a
        claim): a device gives its wearer's own label ("wearer"), a reviewer a reviewer's (counted by their gold
        accuracy), an operator an operator's (or, asked for, a gold or a wearer label). Nobody without a token
        labels: a label teaches the model."""
        if principal is None:
            raise Unauthorized("labels need a device token or a reviewer's sign-in: anonymous callers cannot "
                               "teach the model")
        self.read_ask(principal, record)
        if principal.kind == "device":
            if requested not in (None, "wearer"):
                raise Forbidden(f"labels with source {requested!r} need a reviewer or operator")
            if record.device_id == ANONYMOUS:
                raise Forbidden("an anonymous ask has no wearer: only reviewers and operators label it")
            return "wearer"
        if principal.allows("operator"):
            return requested if requested in ("wearer", "gold") else "operator"
        if requested == "wearer":
            raise Forbidden("the wearer's own labels come from the wearer's device")
        if requested in ("gold", "operator"):
            raise Forbidden(f"labels with source {requested!r} need an operator")
        return "reviewer"

    def label_author(self, principal: Principal, author: str, source: str) -> str:
        """Who gave a label, as this caller may see it: operators and reviewers see names; a wearer sees their
        own device's labels by name and everyone else's only by role."""
        if principal.kind == "account":
            return author
        return author if source == "wearer" and author == principal.device_id else ""

    def own_waiting_ask(self, principal: Principal | None, record: AskRecord) -> AskRecord:
        """Cancelling an ask or waiting on for its helper is for the device that asked, and nobody else (not its
        wearer's other devices, not operators). An anonymous ask's id is its capability: whoever holds it,
        without a token."""
        if record.device_id == ANONYMOUS:
            if principal is not None and principal.kind != "device":
                raise Forbidden("only the device that asked may cancel or keep waiting")
            return record
        if principal is None:
            raise Unauthorized("send the device token of the glasses that asked")
        if principal.kind != "device":
            raise Forbidden("only the device that asked may cancel or keep waiting")
        if principal.device_id != record.device_id:
            raise NotFound("no such ask")  # a stranger learns nothing about whether the id exists
        return record

    def feedback_device(self, principal: Principal | None, record: AskRecord) -> str:
        """Who the feedback on an answer is from; only the device that asked may give it. An anonymous ask's
        id is its capability (anyone holding it, or an operator); everyone else speaks for their own device."""
        if principal is None or principal.kind != "device":
            if record.device_id != ANONYMOUS or (principal is not None and not principal.allows("operator")):
                raise Forbidden("only the device that asked may give feedback on this answer")
            return ANONYMOUS if principal is None else principal.author
        if principal.device_id is None or principal.device_id != record.device_id:
            raise Forbidden("only the device that asked may give feedback on this answer")
        return principal.device_id

    # -- the wearer's devices -----------------------------------------------------------------------------

    def stream_device(self, principal: Principal) -> str:
        """The device whose answer stream a wearer's caller opens: the stream belongs to a device token."""
        if principal.kind != "device" or principal.device_id is None:
            raise Forbidden("the stream belongs to a device token")
        return principal.device_id

    def memory_device(self, principal: Principal | None) -> str:
        """Memories belong to a device: only its own token lists or forgets them."""
        if principal is None or principal.kind != "device" or not principal.device_id:
            raise Unauthorized("memories belong to a device: send 'Authorization: Bearer dev_…'")
        return principal.device_id

    def read_note(self, principal: Principal | None, note: NoteSession) -> NoteSession:
        """Anonymous notes: whoever holds the 128-bit id. A wearer's notes: their devices and operators only."""
        if note.device_id == ANONYMOUS:
            return note
        if principal is not None:
            if principal.allows("operator") or principal.device_id == note.device_id:
                return note
            if self._wearer_owns(principal, note.device_id):
                return note
        raise NotFound(f"no note session {note.id!r}")

    def speak(self, principal: Principal | None) -> None:
        """Speech out takes a token unless anonymous asks are allowed."""
        if principal is None and not self.settings.allow_anonymous_asks:
            raise Unauthorized("speech needs a token: send 'Authorization: Bearer <token>'")

    # -- privacy ------------------------------------------------------------------------------------------

    def wearer(self, principal: Principal) -> str:
        """The wearer whose consent and data a device's caller manages."""
        if not principal.wearer_id:
            raise Forbidden("this device belongs to no wearer")
        return principal.wearer_id

    def deletable_wearer(self, wearer_id: str) -> str:
        """A wearer an operator may delete the data of: anonymous asks belong to nobody."""
        if wearer_id == ANONYMOUS:
            raise BadInput("anonymous asks belong to nobody")
        return wearer_id

    def queued_ask(self, principal: Principal, record: AskRecord) -> AskRecord:
        """Frames' redactions and originals: reviewers only of the asks whose review item they hold; operators
        any."""
        if principal.role != "operator" and not self._reviewer_holds(principal, record):
            raise NotFound("no such ask in the review items you hold")
        return record

    def may_reveal(self, principal: Principal) -> bool:
        """Operators, and accounts an operator granted the reveal permission (``lookloop privacy grant-reveal``)."""
        if principal.role == "operator":
            return True
        if principal.kind != "account" or not principal.account_id:
            return False
        return self.grants.reveal_granted(principal.account_id)

    def reveal(self, principal: Principal, ask_id: str) -> None:
        """Revealing an unredacted frame needs the reveal permission; a refusal is audited too."""
        if not self.may_reveal(principal):
            actor, role = audit.actor_of(principal)
            audit.record(self.audit_db, actor=actor, role=role, action="privacy.reveal_denied", target=f"ask:{ask_id}")
            raise Forbidden("revealing an unredacted frame needs the reveal permission")

    # -- the review queue ---------------------------------------------------------------------------------

    def review_item(self, principal: Principal, item_id: str) -> QueueItem:
        """A review item (and its redacted frame): operators any; a reviewer only while they hold it (it was
        offered to them or they claimed it). Answered, expired or someone else's items look like no item."""
        if principal.kind == "account" and principal.allows("operator"):
            return self.reviews.get(item_id)
        if principal.kind == "account" and principal.account_id and principal.allows("reviewer"):
            item = self.reviews.held_item(item_id, principal.account_id)
            if item is not None:
                return item
            raise NotFound(f"no review item {item_id!r} held by you: claim it first")
        raise Forbidden("only reviewers and operators work the queue")

    def stats_scope(self, principal: Principal) -> str | None:
        """Whose reviewer stats a caller sees: operators everyone's (None), reviewers their own."""
        return None if principal.allows("operator") else principal.account_id

    # -- retries ------------------------------------------------------------------------------------------

    @staticmethod
    def retry_key(principal: Principal | None, key: str | None) -> idempotency.Key | None:
        """Whose ``Idempotency-Key`` this is: the device's or the account's own. A caller without a token
        has no identity to keep a key apart from anyone else's: their keys replay nothing."""
        if principal is None:
            return None
        if principal.kind == "device":
            caller = idempotency.device_caller(principal.device_id or "")
        else:
            caller = idempotency.account_caller(principal.account_id) if principal.account_id else None
        return idempotency.scoped(caller, key)

    # -- helpers ------------------------------------------------------------------------------------------

    def _reviewer_holds(self, principal: Principal, record: AskRecord) -> bool:
        return (principal.kind == "account" and bool(principal.account_id) and principal.allows("reviewer")
                and self.reviews.holds_ask(principal.account_id or "", record.id))

    def _owns(self, principal: Principal, record: AskRecord) -> bool:
        """The ask was sent by this device or by another device of the same wearer."""
        if principal.kind != "device":
            return False
        return principal.device_id == record.device_id or self._wearer_owns(principal, record.device_id)

    def _wearer_owns(self, principal: Principal, device_id: str) -> bool:
        if not principal.wearer_id:
            return False
        return device_id in self.wearers.devices_of_wearer(principal.wearer_id)


async def idempotency_key(
    caller: Annotated[Principal | None, Depends(current_principal)],
    idempotency_key: Annotated[str | None, Header(
        max_length=128, description="Resend a write with the same key to have it applied once (needs a token)."
    )] = None,
) -> idempotency.Key | None:
    """A dependency: the request's ``Idempotency-Key`` scoped to its caller (None: no key or no token)."""
    return Access.retry_key(caller, idempotency_key)


def require(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits only callers holding one of ``roles`` (any signed-in caller without roles)."""
    allowed = roles or ROLES

    async def dependency(principal: Principal | None = Depends(current_principal)) -> Principal:  # noqa: B008
        return Access.role(principal, allowed)

    dependency.__name__ = f"require_{'_'.join(allowed)}"
    return dependency
