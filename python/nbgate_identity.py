"""nbgate's identity provider for Jupyter Server: Jupyter learns which
nbgate user sent each request, so collaborators see each other's names and
Jupyter's logs name the user.

`nbgate run` enables it by itself: it writes this file into its private
runtime directory (0700), puts that directory on PYTHONPATH for Jupyter,
passes `--ServerApp.identity_provider_class=nbgate_identity.NbgateIdentityProvider`
and hands over a fresh per-start secret in a 0600 file named by
`NBGATE_IDENTITY_SECRET_FILE`, the way it hands over Jupyter's token.
Nothing beyond jupyter_server (>= 2.0) is needed.

The header nbgate sends on every forwarded request and WebSocket upgrade
(any copy a client sent is removed first):

    X-Nbgate-Identity: v1;user=<form-urlencoded name>;ts=<unix seconds>;mac=<hex>

where mac = HMAC-SHA256(secret, "v1;user=…;ts=…" + "\\n" + method + "\\n" + target)
and target is the request target Jupyter receives (path and query).

Threat model:
- A client of nbgate cannot name itself: nbgate removes any client copy,
  and without the secret no MAC verifies.
- A process that reaches Jupyter's socket directly (only Jupyter's own user
  can: the socket is 0600 in a 0700 directory) cannot forge a header without
  the secret. The secret is read once and its file removed; it is never in
  argv, in the environment kernels inherit (the variable naming the file is
  removed here), or in a log.
- A header that leaks (an app behind jupyter-server-proxy receives every
  header of the requests proxied to it) authorises only that method on that
  target, for `max_age` seconds: it cannot be replayed to Jupyter's API.
- Kernels run as Jupyter's user and could read this process's memory: the
  secret does not protect against code Jupyter already runs; nothing could.

A request with a header that does not verify is refused (Jupyter answers
403), never served as another user. A request without the header is
authenticated by Jupyter's token alone (nbgate keeps the token for its own
needs), never by a login cookie Jupyter set earlier.

A request authenticated by the header counts as token-authenticated for
Jupyter: it skips Jupyter's XSRF and Origin checks, as the requests nbgate
sent with Jupyter's token always did, because nbgate makes those checks
itself before anything reaches Jupyter.
"""

import hashlib
import hmac
import os
import time
import urllib.parse

from jupyter_server.auth.identity import IdentityProvider, User
from traitlets import Integer, default

HEADER = "X-Nbgate-Identity"
SECRET_ENV = "NBGATE_IDENTITY_SECRET_FILE"
VERSION = "v1"
# JupyterLab's themes define --jp-collaborator-color1 … 7.
COLORS = 7
# nbgate and Jupyter share a clock (same host), but allow a little skew.
FUTURE_SKEW = 5


def verify(secret, value, method, target, now, max_age):
    """The user name `value` carries, or None when it does not verify for
    this method and target at `now`."""
    signed, sep, mac = value.rpartition(";mac=")
    if not sep:
        return None
    expected = hmac.new(
        secret, f"{signed}\n{method}\n{target}".encode(), hashlib.sha256
    ).hexdigest()
    # Constant time: a timing difference must not reveal a MAC byte by byte.
    if not hmac.compare_digest(expected, mac):
        return None
    parts = signed.split(";")
    if (
        len(parts) != 3
        or parts[0] != VERSION
        or not parts[1].startswith("user=")
        or not parts[2].startswith("ts=")
        or not (parts[2][3:].isascii() and parts[2][3:].isdigit())
    ):
        return None
    ts = int(parts[2][3:])
    if not now - max_age <= ts <= now + FUTURE_SKEW:
        return None
    try:
        name = urllib.parse.unquote_plus(parts[1][5:], errors="strict")
    except UnicodeDecodeError:
        return None
    return name or None


def user_for(name):
    """The identity model collaborators see: the nbgate user name, its
    initials and a colour that stays the same for a name across starts."""
    words = [w for w in name.replace(".", " ").replace("_", " ").replace("-", " ").split() if w]
    initials = "".join(w[0] for w in words[:2]).upper() or name[:1].upper()
    index = hashlib.sha256(name.encode()).digest()[0] % COLORS + 1
    return User(
        username=name,
        name=name,
        display_name=name,
        initials=initials,
        color=f"var(--jp-collaborator-color{index})",
    )


def _take_secret():
    """Reads the hand-over file once, removes it, and removes its variable
    (and this module's directory on PYTHONPATH) from the environment kernels
    inherit."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.environ.pop(SECRET_ENV, None)
    entries = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if here in entries:
        kept = [e for e in entries if e != here]
        if any(kept):
            os.environ["PYTHONPATH"] = os.pathsep.join(kept)
        else:
            os.environ.pop("PYTHONPATH", None)
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            secret = f.read().strip()
    except OSError:
        return None
    try:
        os.unlink(path)
    except OSError:
        pass
    return secret or None


class NbgateIdentityProvider(IdentityProvider):
    """Users named by nbgate's signed header (see the module doc)."""

    max_age = Integer(
        300,
        config=True,
        help="Seconds a header stays valid. Jupyter checks it once it has "
        "read the whole request body, so this covers a slow upload.",
    )

    @default("updatable_fields")
    def _nothing_updatable(self):
        # Names come from nbgate; nothing the browser could change is kept.
        return []

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._secret = _take_secret()
        if self._secret is None:
            self.log.warning(
                "nbgate identity: no secret in $%s; only Jupyter's token is accepted",
                SECRET_ENV,
            )

    async def get_user(self, handler):
        if getattr(handler, "_jupyter_current_user", None):
            return handler._jupyter_current_user
        values = handler.request.headers.get_list(HEADER)
        if not values:
            user = await self.get_user_token(handler)
            if user is not None:
                handler._token_authenticated = True
            return user
        name = None
        if self._secret is not None and len(values) == 1:
            req = handler.request
            name = verify(self._secret, values[0], req.method, req.uri, time.time(), self.max_age)
        if name is None:
            self.log.warning(
                "nbgate identity: refused a request whose %s header does not verify: %s %s",
                HEADER,
                handler.request.method,
                handler.request.path,
            )
            return None
        # nbgate checked Origin and CSRF before forwarding (module doc).
        handler._token_authenticated = True
        return user_for(name)
