"""Pre-defined contents ("packets") of a survey's transfers, named as Fink's portals name them.

Each survey declares its packets (`Survey.packets`, short name -> `Packet`); the transfer's
content resolution (`transfer.content`) turns one into columns the same way for every survey:
the packet's `fields` first, each published under its last name (`diaSource.snr` -> `snr`),
then, when `all_but` is not None, every root column of the selection except those listed.

A packet is found by its short name (`light`, `light_sso`) or by any of its portal names
(`Light SSO packet`, as the portal's form and its YAML export write them), case-insensitively
and whatever the spacing.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

# The night partition columns every transfer may publish (Fink's Full packet keeps them).
NIGHT_COLUMNS = ("year", "month", "day")


@dataclass(frozen=True)
class Packet:
    """A pre-defined content: `fields` flattened to the root, then the root columns but `all_but`."""

    name: str
    # as Fink's portal writes them, first the current one (e.g. "Light static packet", "Light packet")
    portal_names: tuple[str, ...]
    description: str
    fields: tuple[str, ...] = ()
    # None: no root column beyond `fields`; () every root column
    all_but: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        """The name users see (the portal's current one)."""
        return self.portal_names[0] if self.portal_names else self.name

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.portal_names)


# A name that may designate a packet: words (letters, underscores) separated by single spaces.
_NAME = re.compile(r"[A-Za-z_]+(?: [A-Za-z_]+)*")


def _key(name: str) -> str:
    return name.replace("_", " ").lower()


def find_packet(packets: Mapping[str, Packet], name: str) -> Packet | None:
    """The packet `name` designates (short or portal name, any case), or None."""
    if not _NAME.fullmatch(name):
        return None
    key = _key(name)
    for packet in packets.values():
        if any(_key(n) == key for n in packet.names):
            return packet
    return None


def closest_packet(packets: Mapping[str, Packet], name: str) -> str | None:
    """The portal name closest to `name`, compared without the word "packet" (None when
    nothing is close)."""
    labels = {_key(n).removesuffix(" packet"): packet.label for packet in packets.values() for n in packet.portal_names}
    match = difflib.get_close_matches(_key(name).removesuffix(" packet"), list(labels), n=1, cutoff=0.5)
    return labels[match[0]] if match else None


def fink_packets(cutouts: Sequence[str], light_fields: Sequence[str], light_excludes: Sequence[str],
                 light_portal_names: Sequence[str] = ("Light packet",),
                 light_description: str = "", extra: Sequence[Packet] = ()) -> dict[str, Packet]:
    """The packets every Fink survey has: Full (every column), Medium (all but the cutouts),
    Light (`light_fields` flattened, then every root column but `light_excludes`, the cutouts
    and the night columns), plus the survey's `extra` ones."""
    packets = [
        Packet("full", ("Full packet",), "every column, year/month/day included", all_but=()),
        Packet("medium", ("Medium packet",), "every column but the cutouts", all_but=tuple(cutouts)),
        Packet("light", tuple(light_portal_names), light_description or "all but cutouts and history",
               fields=tuple(light_fields), all_but=(*cutouts, *light_excludes, *NIGHT_COLUMNS)),
        *extra,
    ]
    return {packet.name: packet for packet in packets}
