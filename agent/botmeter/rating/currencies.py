"""ISO 4217 currency codes (list one, the active codes, amendments up to 180 of 2025) and their
minor units: the digits after the decimal point of the currency's smallest unit.

Changes the list reflects, among others: HRK withdrawn (Croatia uses EUR, 2023), SLL replaced
by SLE (2024), ZWL by ZWG (amendment 177, 2024), CUC withdrawn (178), XAD added (179, 2025),
ANG replaced by XCG (180, 2025). BGN is listed until Bulgaria adopts the euro (2026-01-01).
"""

from __future__ import annotations

from typing import Final

_TWO = (
    "AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN "
    "BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP "
    "GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT "
    "LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN "
    "NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE "
    "SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES "
    "WST XAD XCD XCG YER ZAR ZMW ZWG"
)
_ZERO = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE = "BHD IQD JOD KWD LYD OMR TND"
_FOUR = "CLF UYW"
#: codes without a minor unit ("N.A." in the standard): precious metals, bond-market units,
#: the SDR and other units of account, the testing code and "no currency"
_NONE = "XAG XAU XBA XBB XBC XBD XDR XPD XPT XSU XTS XUA XXX"

#: every active code: its minor unit, or None where the code has none
ACTIVE: Final[dict[str, int | None]] = {
    **{code: 2 for code in _TWO.split()},
    **{code: 0 for code in _ZERO.split()},
    **{code: 3 for code in _THREE.split()},
    **{code: 4 for code in _FOUR.split()},
    **{code: None for code in _NONE.split()},
}

#: codes withdrawn from the list that plan files may still carry, with their replacement
WITHDRAWN: Final[dict[str, str]] = {
    "ANG": "XCG", "BYR": "BYN", "CUC": "CUP", "EEK": "EUR", "GHC": "GHS", "HRK": "EUR",
    "LTL": "EUR", "LVL": "EUR", "MRO": "MRU", "SLL": "SLE", "STD": "STN", "TRL": "TRY",
    "VEF": "VES", "ZMK": "ZMW", "ZWL": "ZWG",
}


def minor_unit(code: str) -> int | None:
    """Digits after the decimal point of an active currency; None when it is not one or has no
    minor unit."""
    return ACTIVE.get(code)


def currency_problem(code: str) -> str | None:
    """Why `code` cannot be a plan's currency, or None when it can."""
    if code in WITHDRAWN:
        return (f"{code!r} was withdrawn from ISO 4217 (its successor is "
                f"{WITHDRAWN[code]!r})")
    if code not in ACTIVE:
        return f"{code!r} is not a known ISO 4217 currency code"
    if ACTIVE[code] is None:
        return (f"{code!r} is an ISO 4217 code without a minor unit (a metal or a unit of "
                "account): a plan's amounts need a currency")
    return None
