"""The column mapping of a vendor's usage detail: which of its columns is which field, and how
its times, numbers and callers are written (`--mapping FILE`, docs/reconcile.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config import first_error, read_toml
from ..rating.currencies import ACTIVE

Column = Annotated[str, Field(min_length=1, max_length=200)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Columns(_Table):
    """The vendor's column name for each field; optional fields may be left out."""

    session_id: Column | None = None
    caller_number: Column
    started_at: Column
    seconds: Column | None = None
    minutes: Column | None = None
    amount: Column
    currency: Column | None = None

    @model_validator(mode="after")
    def _a_duration(self) -> Columns:
        if self.seconds is None and self.minutes is None:
            raise ValueError("give `seconds` or `minutes` (the billed duration)")
        return self

    @model_validator(mode="after")
    def _one_column_per_field(self) -> Columns:
        seen: dict[str, str] = {}
        for name, column in self.named().items():
            if column in seen:
                raise ValueError(f"{seen[column]} and {name} name the same column {column!r}")
            seen[column] = name
        return self

    def named(self) -> dict[str, str]:
        """Field -> the vendor's column, for the fields this mapping gives."""
        return {name: column for name, column in self.model_dump().items() if column is not None}


class Format(_Table):
    """How values are written. `timezone`: for times without an offset; `country_code`: the
    callers' country, so that +CC... and 00CC... equal the national form; `time_format`: a
    strptime format when times are not ISO 8601; `seconds`: whether the vendor's seconds are
    billed (after the plan's blocks, the default) or measured; `currency`: the invoice's
    currency when no column gives it."""

    timezone: str | None = None
    country_code: Annotated[str, Field(pattern=r"^[1-9][0-9]{0,3}$")] | None = None
    decimal_comma: bool = False
    time_format: Annotated[str, Field(min_length=2, max_length=100)] | None = None
    seconds: Literal["billed", "measured"] = "billed"
    currency: str | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value[:60]!r} (an IANA name such as "
                                 "Asia/Shanghai)") from None
        return value

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str | None) -> str | None:
        if value is not None and value not in ACTIVE:
            raise ValueError(f"unknown currency {value[:20]!r} (an ISO 4217 code such as CNY)")
        return value

    @field_validator("time_format")
    @classmethod
    def _a_format(cls, value: str | None) -> str | None:
        if value is not None and "%" not in value:
            raise ValueError("is not a strptime format (e.g. \"%Y-%m-%d %H:%M:%S\")")
        return value


class InvoiceMapping(_Table):
    columns: Columns
    format: Format = Format()
    source: str = Field(default="", exclude=True)

    @property
    def zone(self) -> ZoneInfo | None:
        return ZoneInfo(self.format.timezone) if self.format.timezone else None


def load_mapping(path: Path) -> InvoiceMapping:
    """The mapping file, or ConfigError naming the file, the key and the reason."""
    data = read_toml(path)
    try:
        return InvoiceMapping.model_validate({**data, "source": str(path)})
    except ValidationError as exc:
        raise first_error(str(path), exc) from None
