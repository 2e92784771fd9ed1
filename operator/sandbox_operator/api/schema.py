"""The schema pieces every kind is made of: Kubernetes quantities, times, name patterns, CEL rules, conditions, and
the base models of specs (strict) and statuses (lenient). Imports no Kopf and no Kubernetes client."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
)

from sandbox_operator.api import names as c

# The Kubernetes quantity grammar (apimachinery resource.Quantity), without a sign: no resource here can be negative.
QUANTITY_PATTERN = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
CONFIG_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
PORT_NAME_PATTERN = DNS_LABEL_PATTERN  # an IANA service name is a DNS label of at most 15 characters
MOUNT_PATH_PATTERN = r"^(/[A-Za-z0-9_][A-Za-z0-9._-]*)+$"
IMAGE_PATTERN = r"^[^\s]+$"
# Mounting over these would hide or subvert what the container runtime and the sandbox itself rely on.

_BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
_NUMBER_RE = re.compile(r"^([0-9.]+)(.*)$")


def parse_quantity(quantity: int | str) -> Decimal:
    """Return the value of a Kubernetes quantity ("500m" is 0.5, "1Gi" is 1073741824)."""
    text = str(quantity)
    if not _QUANTITY_RE.match(text):
        raise ValueError(f"{text!r} is not a Kubernetes quantity such as 500m, 2, 512Mi or 1Gi")
    number, suffix = _NUMBER_RE.match(text).groups()  # type: ignore[union-attr]
    try:
        if suffix in _BINARY_SUFFIXES:
            return Decimal(number) * _BINARY_SUFFIXES[suffix]
        if suffix in _DECIMAL_SUFFIXES:
            return Decimal(number) * _DECIMAL_SUFFIXES[suffix]
        return Decimal(number) * Decimal(10) ** int(suffix[1:])
    except ArithmeticError:  # 1E9999999999 matches the grammar but overflows any Decimal context
        raise ValueError(f"{text!r} is too large to be a Kubernetes quantity") from None


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, bool) or (isinstance(value, int) and value < 0):
        raise ValueError("must be a non-negative Kubernetes quantity such as 500m, 2, 512Mi or 1Gi")
    parse_quantity(value)
    return value


# The times the operator computes with. Python's datetime ends at years 1 and 9999, so a time the API server accepts
# (9999-12-31T23:30:00-01:00 is in year 10000 in UTC) could not even be converted to UTC: every time read is brought
# into this range first, and expiresAt must lie in it (the CRD says so too).
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(9999, 1, 1, tzinfo=UTC)
TIME_RANGE_TEXT = "between 1970-01-01T00:00:00Z and 9999-01-01T00:00:00Z"


def to_utc(moment: datetime) -> datetime:
    """The moment in UTC, brought into [EARLIEST_TIME, LATEST_TIME]; a time without a zone is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:  # beyond year 1 or 9999 once the offset is applied
        return EARLIEST_TIME if moment.year < LATEST_TIME.year // 2 else LATEST_TIME
    return min(max(utc, EARLIEST_TIME), LATEST_TIME)


def seconds_after(moment: datetime, seconds: float) -> datetime:
    """``moment`` plus ``seconds``, at most LATEST_TIME."""
    try:
        return min(to_utc(moment) + timedelta(seconds=seconds), LATEST_TIME)
    except OverflowError:
        return LATEST_TIME


def format_time(moment: datetime) -> str:
    """Render a time the way Kubernetes does (RFC 3339, UTC, whole seconds), so equal times give equal bytes."""
    return to_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 time into UTC within [EARLIEST_TIME, LATEST_TIME]; a time without a zone is UTC."""
    return to_utc(datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00")))


def _check_time_range(moment: datetime) -> datetime:
    if to_utc(moment) != moment or not EARLIEST_TIME <= moment < LATEST_TIME:
        raise ValueError(f"must lie {TIME_RANGE_TEXT}")
    return to_utc(moment)


Quantity = Annotated[
    int | str,
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
Timestamp = Annotated[
    AwareDatetime,
    AfterValidator(to_utc),
    PlainSerializer(format_time, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "maxLength": 64}),
]
# A time a user writes: refused (not clamped) outside the range the operator computes with.
BoundedTimestamp = Annotated[
    AwareDatetime,
    AfterValidator(_check_time_range),
    PlainSerializer(format_time, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "maxLength": 64}),
]


def cel(*rules: tuple[str, str]) -> dict[str, Any]:
    """Schema extra holding CEL rules as (rule, message) pairs for `x-kubernetes-validations`."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in rules]}


class SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class StatusModel(BaseModel):
    """Base of every status: written by the operator only, read leniently."""

    # Status is ours, but older operator versions or kubectl may have left keys we no longer know: reading must not
    # fail on them.
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    def condition(self, kind: str) -> Condition | None:
        """The condition of the given type, if present."""
        conditions: list[Condition] = getattr(self, "conditions", [])
        return next((cond for cond in conditions if cond.type == kind), None)

    def to_dict(self) -> dict[str, Any]:
        """The `status` object as written to the API server."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Condition(StatusModel):
    """An aspect of an object's state, following Kubernetes API conventions."""

    type: str = Field(description="Ready, Suspended or Expired.", max_length=64)
    status: c.ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word for programs.", max_length=64)
    message: str = Field("", description="Detail for humans.", max_length=c.MAX_MESSAGE_LENGTH)
    observed_generation: int | None = Field(
        None, alias="observedGeneration", description="Generation of the spec this condition reflects.", ge=0
    )
    last_transition_time: Timestamp = Field(
        alias="lastTransitionTime", description="When status or reason last changed."
    )


NAME_ERROR = "metadata.name: must be a DNS label (lowercase, digits, '-') of at most 63 chars"


def name_error(body: Mapping[str, Any]) -> str | None:
    """Why the object's name cannot serve (it becomes part of other objects' names and label values), or None."""
    name = str((body.get("metadata") or {}).get("name", ""))
    return None if len(name) <= c.MAX_NAME_LENGTH and re.match(DNS_LABEL_PATTERN, name) else NAME_ERROR


def quantity_not_above(value: str, limit: str) -> tuple[str, str]:
    """A CEL rule (and its message): the quantity at path ``value`` under self is at most the one at ``limit``, when
    both are set."""
    def present(path: str) -> list[str]:
        parts = path.split(".")
        return [f"has(self.{'.'.join(parts[: i + 1])})" for i in range(len(parts))]

    unset = " || ".join(f"!{check}" for check in (*present(value), *present(limit)))
    rule = f"{unset} || quantity(string(self.{value})).compareTo(quantity(string(self.{limit}))) <= 0"
    return rule, f"{value} must not exceed {limit}"


def next_condition(
    old: StatusModel, kind: str, status: c.ConditionStatus, reason: str, message: str, generation: int, now: datetime
) -> Condition:
    """The condition as it should be written: its transition time moves only when its status or reason changes."""
    previous = old.condition(kind)
    unchanged = previous is not None and previous.status == status and previous.reason == reason
    return Condition(
        type=kind,
        status=status,
        reason=reason,
        message=message[: c.MAX_MESSAGE_LENGTH],
        observed_generation=generation if generation >= 0 else None,
        last_transition_time=previous.last_transition_time if unchanged and previous else now,
    )


S = TypeVar("S", bound=StatusModel)


def read_status(model: type[S], body: Mapping[str, Any]) -> S:
    """The stored status of ``body``; one that does not validate reads as empty (it only costs fresh transition
    times)."""
    try:
        return model.model_validate(body.get("status") or {})
    except ValidationError:
        return model()


def status_changed(model: type[StatusModel], old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether ``new`` differs from the stored status in anything the operator owns (so it must be written)."""
    try:
        normalized = model.model_validate(old or {}).to_dict()
    except ValidationError:
        return True
    return normalized != dict(new)


def describe_validation_error(error: ValidationError, prefix: str) -> str:
    """Summarise a pydantic error by field path and rule, leaving input values out (they may be secrets)."""
    problems = []
    for detail in error.errors(include_input=False, include_url=False):
        path = ".".join(str(part) for part in (prefix, *detail["loc"]))
        problems.append(f"{path}: {detail['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)[: c.MAX_MESSAGE_LENGTH]


def optional_time(text: Any) -> datetime | None:
    """Parse an RFC 3339 time; None for anything that is not one."""
    if not isinstance(text, str):
        return None
    try:
        return parse_time(text)
    except ValueError:
        return None
