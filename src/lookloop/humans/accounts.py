"""Accounts, wearers, device tokens and login sessions. Only sha256 digests of tokens are stored."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, select

from lookloop.domain import as_utc, utcnow
from lookloop.errors import BadInput, Conflict, NotFound, TooManyRequests, Unauthorized
from lookloop.humans.login_throttle import LoginThrottle
from lookloop.humans.tables import AccountRow, DeviceRow, SessionRow, WearerRow
from lookloop.store.db import Database

ROLES = ("wearer", "reviewer", "operator")
ACCOUNT_ROLES = ("reviewer", "operator")
DEVICE_PREFIX = "dev_"
SESSION_PREFIX = "ses_"
_USERNAME = re.compile(r"^[A-Za-z0-9_.\-@]{1,64}$")
_hasher = PasswordHasher()
# Open sockets re-check their token on every message and twice a second while quiet; a verdict this young is
# reused, so a revocation made by another process (the CLI, another worker) reaches them within a second.
STANDING_TTL_S = 0.5
_STANDING_MAX = 10_000
log = logging.getLogger("lookloop.humans.accounts")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: a device (role wearer) or a signed-in account (reviewer, operator)."""

    kind: Literal["device", "account"]
    role: str
    account_id: str | None = None
    device_id: str | None = None
    wearer_id: str | None = None
    name: str = ""

    def allows(self, *roles: str) -> bool:
        """True when this principal holds one of ``roles``; an operator may do all a reviewer may."""
        return self.role in roles or (self.role == "operator" and "reviewer" in roles)

    @property
    def author(self) -> str:
        """The name stored with labels this principal gives."""
        return self.name or self.account_id or self.device_id or ""


@dataclass(frozen=True)
class Revocation:
    """Credentials that stopped counting: every session of an account, one session, or a device's token."""

    reason: str
    account_id: str | None = None
    session: str | None = None  # the sha256 of the one session signed out; None with account_id: all of them
    device_id: str | None = None
    release_locks: bool = False  # the account is signed out everywhere: its review locks go back to the queue


@dataclass(frozen=True)
class Standing:
    """Whether a token still stands for its principal, and why not when it does not."""

    valid: bool
    reason: str = ""


@dataclass(frozen=True)
class AccountInfo:
    id: str
    username: str
    role: str
    disabled: bool
    created_at: dt.datetime


@dataclass(frozen=True)
class DeviceInfo:
    id: str
    name: str
    wearer_id: str
    wearer: str
    created_at: dt.datetime
    revoked: bool


class Accounts:
    """Creates and checks accounts, devices and sessions."""

    def __init__(self, db: Database, *, session_ttl_hours: float = 12.0, throttle: LoginThrottle | None = None
                 ) -> None:
        self.db = db
        self.session_ttl = dt.timedelta(hours=session_ttl_hours)
        self.throttle = throttle or LoginThrottle(db)
        # Told (in the thread that revoked) when credentials stop counting: the live hub closes their sockets.
        self.revoked: list[Callable[[Revocation], None]] = []
        self._standing: dict[str, tuple[float, Standing]] = {}
        self._standing_lock = threading.Lock()

    # -- accounts -----------------------------------------------------------------------------------------

    def add_account(self, username: str, role: str, password: str | None = None) -> tuple[AccountInfo, str]:
        """Creates a reviewer or operator; returns the password (generated when not given)."""
        if not _USERNAME.match(username or ""):
            raise BadInput("a username is 1-64 letters, digits or _.-@")
        if role not in ACCOUNT_ROLES:
            raise BadInput(f"role must be one of {', '.join(ACCOUNT_ROLES)}")
        password = password or secrets.token_urlsafe(12)
        if len(password) < 8:
            raise BadInput("a password has at least 8 characters")
        with self.db.session() as s:
            if s.scalars(select(AccountRow).where(AccountRow.username == username)).first() is not None:
                raise Conflict(f"the account {username!r} exists")
            row = AccountRow(username=username, role=role, password_hash=_hasher.hash(password))
            s.add(row)
            s.flush()
            return _account_info(row), password

    def set_password(self, username: str, password: str) -> None:
        """A new password signs the account out everywhere (open sockets close, review locks go back)."""
        if len(password) < 8:
            raise BadInput("a password has at least 8 characters")
        with self.db.session() as s:
            row = self._account(s, username)
            row.password_hash = _hasher.hash(password)
            s.execute(delete(SessionRow).where(SessionRow.account_id == row.id))
            account_id = row.id
        self._revoke(Revocation("the password changed; sign in again", account_id=account_id, release_locks=True))

    def set_disabled(self, username: str, disabled: bool) -> None:
        """Disabling signs the account out everywhere: its sessions end, its open sockets close and its review
        locks go back to the queue."""
        with self.db.session() as s:
            row = self._account(s, username)
            row.disabled = disabled
            if disabled:
                s.execute(delete(SessionRow).where(SessionRow.account_id == row.id))
            account_id = row.id
        if disabled:
            self._revoke(Revocation("the account is disabled", account_id=account_id, release_locks=True))

    def list_accounts(self) -> list[AccountInfo]:
        with self.db.session() as s:
            return [_account_info(r) for r in s.scalars(select(AccountRow).order_by(AccountRow.username)).all()]

    def account(self, account_id: str) -> AccountInfo:
        with self.db.session() as s:
            row = s.get(AccountRow, account_id)
            if row is None:
                raise NotFound("no such account")
            return _account_info(row)

    @staticmethod
    def _account(s: Any, username: str) -> AccountRow:
        row: AccountRow | None = s.scalars(select(AccountRow).where(AccountRow.username == username)).first()
        if row is None:
            raise NotFound(f"no account {username!r}")
        return row

    # -- sessions -----------------------------------------------------------------------------------------

    def login(self, username: str, password: str, *, address: str | None = None) -> tuple[str, AccountInfo]:
        """Checks the password and opens a session; the same message for every failure.

        Failures are counted per username and per client ``address``: past a few, each further try must wait
        longer (TooManyRequests, with the seconds to wait), and is refused unchecked until then."""
        wait = self.throttle.retry_after(username, address)
        if wait > 0:
            raise TooManyRequests(f"too many failed sign-ins; try again in {max(1, round(wait))} s", wait)
        try:
            opened = self._open_session(username, password)
        except Unauthorized:
            self.throttle.failed(username, address)
            raise
        self.throttle.succeeded(username, address)
        return opened

    def _open_session(self, username: str, password: str) -> tuple[str, AccountInfo]:
        failure = Unauthorized("wrong username or password")
        with self.db.session() as s:
            row = s.scalars(select(AccountRow).where(AccountRow.username == username)).first()
            if row is None:
                _hasher.hash(password)  # same cost as a real check: no timing hint that the name is unknown
                raise failure
            try:
                _hasher.verify(row.password_hash, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                raise failure from None
            if row.disabled:
                raise failure
            if _hasher.check_needs_rehash(row.password_hash):
                row.password_hash = _hasher.hash(password)
            token = SESSION_PREFIX + secrets.token_urlsafe(32)
            now = utcnow()
            s.add(SessionRow(token_hash=token_hash(token), account_id=row.id, created_at=now,
                             expires_at=now + self.session_ttl))
            return token, _account_info(row)

    def logout(self, token: str) -> None:
        """Ends one session: its open sockets close; with no other session left, the review locks go back."""
        digest = token_hash(token)
        with self.db.session() as s:
            row = s.get(SessionRow, digest)
            if row is None:
                return
            account_id = row.account_id
            s.delete(row)
            s.flush()
            others = s.scalar(select(func.count()).select_from(SessionRow).where(
                SessionRow.account_id == account_id, SessionRow.expires_at > utcnow())) or 0
        self._revoke(Revocation("signed out", account_id=account_id, session=digest, release_locks=others == 0))

    # -- wearers and devices ------------------------------------------------------------------------------

    def add_wearer(self, name: str) -> str:
        """The wearer's id, creating the wearer when new."""
        name = (name or "").strip()
        if not name or len(name) > 128:
            raise BadInput("a wearer's name is 1-128 characters")
        with self.db.session() as s:
            row = s.scalars(select(WearerRow).where(WearerRow.name == name)).first()
            if row is None:
                row = WearerRow(name=name)
                s.add(row)
                s.flush()
            return row.id

    def add_device(self, wearer: str, name: str = "") -> tuple[DeviceInfo, str]:
        """A new device for ``wearer`` (created when new); the token is returned once and never stored."""
        wearer_id = self.add_wearer(wearer)
        token = DEVICE_PREFIX + secrets.token_urlsafe(32)
        with self.db.session() as s:
            row = DeviceRow(id="dev-" + secrets.token_hex(8), wearer_id=wearer_id, name=name or "glasses",
                            token_hash=token_hash(token))
            s.add(row)
            s.flush()
            return DeviceInfo(row.id, row.name, wearer_id, wearer.strip(), row.created_at, False), token

    def revoke_device(self, device_id: str) -> None:
        with self.db.session() as s:
            row = s.get(DeviceRow, device_id)
            if row is None:
                raise NotFound(f"no device {device_id!r}")
            row.revoked_at = row.revoked_at or utcnow()
        self._revoke(Revocation("the device token was revoked", device_id=device_id))

    def list_devices(self) -> list[DeviceInfo]:
        with self.db.session() as s:
            rows = s.execute(select(DeviceRow, WearerRow.name).join(WearerRow, WearerRow.id == DeviceRow.wearer_id)
                             .order_by(DeviceRow.created_at)).all()
            return [DeviceInfo(d.id, d.name, d.wearer_id, w, d.created_at, d.revoked_at is not None) for d, w in rows]

    def devices_of_wearer(self, wearer_id: str) -> list[str]:
        with self.db.session() as s:
            return list(s.scalars(select(DeviceRow.id).where(DeviceRow.wearer_id == wearer_id)).all())

    # -- tokens -------------------------------------------------------------------------------------------

    def principal(self, token: str) -> Principal:
        """The principal a bearer token stands for; Unauthorized when unknown, revoked or expired."""
        digest = token_hash(token)
        with self.db.session() as s:
            if token.startswith(DEVICE_PREFIX):
                dev = s.scalars(select(DeviceRow).where(DeviceRow.token_hash == digest)).first()
                if dev is None or dev.revoked_at is not None:
                    raise Unauthorized("the device token is unknown or revoked")
                return Principal("device", "wearer", device_id=dev.id, wearer_id=dev.wearer_id, name=dev.id)
            if token.startswith(SESSION_PREFIX):
                ses = s.get(SessionRow, digest)
                if ses is None or as_utc(ses.expires_at) <= utcnow():
                    raise Unauthorized("the session is unknown or expired; sign in again")
                acc = s.get(AccountRow, ses.account_id)
                if acc is None or acc.disabled:
                    raise Unauthorized("the account is disabled")
                return Principal("account", acc.role, account_id=acc.id, name=acc.username)
        raise Unauthorized("unknown token")

    def standing(self, token: str) -> Standing:
        """Whether ``token`` still counts, for open sockets: asked on every message they carry, so the answer
        is cached for ``STANDING_TTL_S`` (a revocation made in this process clears the cache at once)."""
        fresh = self.cached_standing(token)
        if fresh is not None:
            return fresh
        try:
            self.principal(token)
            verdict = Standing(True)
        except Unauthorized as exc:
            verdict = Standing(False, exc.message)
        with self._standing_lock:
            if len(self._standing) >= _STANDING_MAX:
                self._standing.clear()
            self._standing[token_hash(token)] = (time.monotonic(), verdict)
        return verdict

    def cached_standing(self, token: str) -> Standing | None:
        """The cached verdict on ``token`` while it is fresh (no I/O: safe on the event loop), else None."""
        with self._standing_lock:
            hit = self._standing.get(token_hash(token))
        if hit is None or time.monotonic() - hit[0] > STANDING_TTL_S:
            return None
        return hit[1]

    def _revoke(self, revocation: Revocation) -> None:
        with self._standing_lock:
            self._standing.clear()
        for hook in self.revoked:
            try:
                hook(revocation)
            except Exception:  # the credentials are revoked in the database whatever a listener does
                log.exception("a revocation listener failed")

    # -- demo -----------------------------------------------------------------------------------------------

    def ensure_demo(self, path: Path) -> dict[str, Any]:
        """First start: a demo wearer device, reviewer and operator; credentials kept in ``path`` (mode 0600)."""
        if path.is_file():
            try:
                creds: dict[str, Any] = json.loads(path.read_text())
                self.principal(str(creds["device"]["token"]))
                return creds
            except (ValueError, KeyError, TypeError, Unauthorized):
                pass
        creds = {}
        device, token = self.add_device("demo-wearer", "demo glasses")
        creds["device"] = {"id": device.id, "wearer": device.wearer, "token": token}
        for role in ACCOUNT_ROLES:
            username = f"demo-{role}"
            password = secrets.token_urlsafe(12)
            try:
                self.add_account(username, role, password)
            except Conflict:
                self.set_password(username, password)
            creds[role] = {"username": username, "password": password}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(creds, fh, indent=2)
        os.chmod(path, 0o600)
        return creds


def _account_info(row: AccountRow) -> AccountInfo:
    return AccountInfo(row.id, row.username, row.role, bool(row.disabled), row.created_at)
