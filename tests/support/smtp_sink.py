"""SMTP sink for wharf's tests: aiosmtpd storing each accepted message in a Maildir.

    python smtp_sink.py MAILDIR PORT [--tls CERT KEY] [--user USER --password PASS]

Recipients are answered by their local part:
  reject*@...  -> 550 5.1.1 (permanent: the job must go to the dead letters at once)
  defer*@...   -> 451 4.3.0 (transient: the job must be retried)
  anything else is accepted.

--tls CERT KEY   offer STARTTLS with this certificate and require it before MAIL
                 (the cert needs subjectAltName=IP:127.0.0.1 for a client on 127.0.0.1)
--user/--password require AUTH PLAIN/LOGIN with these credentials (only over TLS when --tls)

Prints "listening PORT" once the socket accepts connections. Needs aiosmtpd
(scripts/test-tools.sh installs it). Based on shared/stand-ins/smtp_sink.py.
"""

import argparse
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink(Mailbox):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("reject"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if local.startswith("defer"):
            return f"451 4.3.0 <{address}>: Temporarily unable to accept, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("maildir")
    p.add_argument("port", type=int)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--user")
    p.add_argument("--password")
    a = p.parse_args()
    if (a.user is None) != (a.password is None):
        p.error("--user and --password go together")

    kwargs = {}
    if a.tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.tls[0], a.tls[1])
        kwargs.update(tls_context=ctx, require_starttls=True)
    if a.user is not None:
        user, password = a.user.encode(), a.password.encode()

        def auth(server, session, envelope, mechanism, data):
            ok = isinstance(data, LoginPassword) and data.login == user and data.password == password
            # handled=False: aiosmtpd then answers "535 5.7.8" itself. (With the default,
            # handled=True, a failed AUTH gets no reply at all and the client hangs.)
            return AuthResult(success=ok, handled=False)

        kwargs.update(authenticator=auth, auth_required=True, auth_require_tls=bool(a.tls))

    c = Controller(Sink(a.maildir), hostname=a.host, port=a.port, **kwargs)
    c.start()
    print("listening", a.port, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        c.stop()


if __name__ == "__main__":
    sys.exit(main())
