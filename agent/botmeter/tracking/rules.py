"""Which contexts, numbers, applications and channels mean 'inbound' and 'bot'."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

#: calls in progress at most ([calls] max_in_progress): beyond, the oldest is closed
MAX_IN_PROGRESS = 50_000
#: channels that carry a bot's media, never a person: ARI ExternalMedia (`UnicastRTP/...`,
#: `WebSocket/...`), AudioSocket, and snoop channels. Not a bot by themselves (that is what
#: `[bot] channels` says), but never taken for a human joining the caller.
MEDIA_CHANNELS: tuple[str, ...] = ("UnicastRTP/*", "AudioSocket/*", "WebSocket/*", "Snoop/*")
#: a bot channel that leaves the caller's bridge and is back within this many seconds never
#: left (`[bot] rejoin_seconds`)
REJOIN_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class TrackingRules:
    inbound_contexts: frozenset[str] = frozenset()
    inbound_numbers: frozenset[str] = frozenset()
    bot_contexts: frozenset[str] = frozenset()
    #: (application lower-cased, data prefix) pairs, from `App` or `App:prefix`
    bot_applications: tuple[tuple[str, str], ...] = ()
    bot_channels: tuple[str, ...] = ()
    rejoin_seconds: float = REJOIN_SECONDS
    _bot_channel_cache: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(
        cls,
        *,
        inbound_contexts: Iterable[str] = (),
        inbound_numbers: Iterable[str] = (),
        bot_contexts: Iterable[str] = (),
        bot_applications: Iterable[str] = (),
        bot_channels: Iterable[str] = (),
        rejoin_seconds: float = REJOIN_SECONDS,
    ) -> TrackingRules:
        apps = []
        for spec in bot_applications:
            app, _, prefix = spec.partition(":")
            apps.append((app.strip().lower(), prefix.strip()))
        return cls(
            frozenset(inbound_contexts), frozenset(inbound_numbers), frozenset(bot_contexts),
            tuple(apps), tuple(bot_channels), rejoin_seconds,
        )

    def is_inbound(self, context: str, exten: str) -> bool:
        return context in self.inbound_contexts or exten in self.inbound_numbers

    def is_bot_step(self, context: str, application: str, app_data: str) -> bool:
        """A dialplan step that puts the channel with the bot."""
        if context in self.bot_contexts:
            return True
        if self.bot_applications:
            app = application.lower()
            for name, prefix in self.bot_applications:
                if app == name and app_data.startswith(prefix):
                    return True
        return False

    def is_bot_channel(self, channel: str) -> bool:
        if not self.bot_channels or not channel:
            return False
        hit = self._bot_channel_cache.get(channel)
        if hit is None:
            hit = any(fnmatchcase(channel, pattern) for pattern in self.bot_channels)
            if len(self._bot_channel_cache) > 10_000:
                self._bot_channel_cache.clear()
            self._bot_channel_cache[channel] = hit
        return hit

    def is_person(self, channel: str) -> bool:
        """A channel that may carry a person: neither a bot channel nor a media channel."""
        return bool(channel) and not self.is_bot_channel(channel) and not any(
            fnmatchcase(channel, pattern) for pattern in MEDIA_CHANNELS)
