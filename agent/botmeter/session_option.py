"""`botmeter calls --session ID`: the bot platform's session id, checked by the rule signals
follow (`tracking.session_id`), so a value no call can have is refused, not searched for."""

from __future__ import annotations

import click

from .tracking.session_id import BadSession, check_session


class SessionId(click.ParamType):
    """A session id as the record keeps it: 1 to 128 printable characters, matched exactly."""

    name = "ID"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        try:
            return check_session(str(value))
        except BadSession as exc:
            self.fail(f"{exc}: no call can have it", param, ctx)
