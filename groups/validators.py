"""Field validators for groups: what the admin and ``full_clean`` refuse, naming the field (issue 11)."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

#: An Ethereum-style contract address: ``0x`` and 40 hexadecimal digits.
CONTRACT_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")


def is_currency_code(value: str) -> bool:
    """Whether ``value`` is an ISO 4217 code as written, upper case (``USD``; not ``usd``)."""
    import pycountry

    # pycountry's lookup ignores case; the stored code must be the standard's upper-case form.
    return (isinstance(value, str) and len(value) == 3 and value.isascii() and value.isupper()
            and pycountry.currencies.get(alpha_3=value) is not None)


def validate_currency_code(value: str) -> None:
    if not is_currency_code(value):
        raise ValidationError("%(value)s is not an ISO 4217 currency code: three capital letters such as USD, "
                              "EUR or KES", code="invalid_currency", params={"value": repr(value)})


def validate_contract_address(value: str) -> None:
    if not CONTRACT_ADDRESS_RE.fullmatch(value or ""):
        raise ValidationError("%(value)s is not a contract address: 0x followed by 40 hexadecimal digits",
                              code="invalid_contract_address", params={"value": repr(value)})
