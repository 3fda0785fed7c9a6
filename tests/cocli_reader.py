"""A reader for cocli's journals written only from cocli's documented ``DatagramRecord`` USV format.

It shares no code with ``cocli_fs`` on purpose: it stands in for cocli's own reader, so a test can
check that what cocli-fs writes is still readable by cocli (and the benchmark can use it as the
naive reference). The documented format:

* a file is records separated by ``\\x1e``; a record's fields are separated by ``\\x1f``;
* 6 fields:  ``timestamp, node_id, target, field, value, causality``
* 7 fields:  ``timestamp, node_id, campaign_name, target, field, value, causality``
* 8 fields (V3): ``timestamp, node_id, campaign_name, environment, target, field, value,
  causality``
"""

from __future__ import annotations

from dataclasses import dataclass

RS = "\x1e"
US = "\x1f"


@dataclass
class DatagramRecord:
    timestamp: str
    node_id: str
    campaign_name: str
    environment: str
    target: str
    field: str
    value: str
    causality: str


def parse_record(text: str) -> DatagramRecord:
    parts = text.rstrip(RS).split(US)
    if len(parts) == 8:
        return DatagramRecord(*parts)
    if len(parts) == 7:
        ts, node, campaign, target, field, value, causality = parts
        return DatagramRecord(ts, node, campaign, "prod", target, field, value, causality)
    if len(parts) == 6:
        ts, node, target, field, value, causality = parts
        return DatagramRecord(ts, node, "unknown", "prod", target, field, value, causality)
    raise ValueError(f"a DatagramRecord has 6, 7 or 8 fields, not {len(parts)}")


def read_text(text: str) -> list[DatagramRecord]:
    """Every record of a journal's text (blank chunks between separators are skipped)."""
    return [parse_record(chunk.strip("\r\n")) for chunk in text.split(RS) if chunk.strip()]


def write_record(r: DatagramRecord, fields: int = 8) -> str:
    """Serialise as cocli does, in its 6-, 7- or 8-field form."""
    if fields == 8:
        parts = [r.timestamp, r.node_id, r.campaign_name, r.environment]
    elif fields == 7:
        parts = [r.timestamp, r.node_id, r.campaign_name]
    elif fields == 6:
        parts = [r.timestamp, r.node_id]
    else:
        raise ValueError(fields)
    return US.join([*parts, r.target, r.field, r.value, r.causality]) + RS
