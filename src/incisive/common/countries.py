"""Countries: ISO 3166-1 alpha-2 codes and the EU/EEA, for residency checks on a node and a Central Node.

:func:`check_country` normalises what a person types (case, the EU's ``EL`` for Greece, ``UK`` for the United
Kingdom) and refuses anything that is not an officially assigned code, naming the expected format. Whether a
country is inside the EU/EEA (so that storing or processing personal data there is no transfer under GDPR
Chapter V) is :func:`in_eu_eea`: the 27 member states plus Iceland, Liechtenstein and Norway.
"""

from __future__ import annotations

from incisive.common.errors import InputError

__all__ = ["EU", "EU_EEA", "ISO_COUNTRIES", "check_country", "in_eu_eea"]

# ISO 3166-1 alpha-2, every officially assigned code (249)
ISO_COUNTRIES: frozenset[str] = frozenset("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ
CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR
GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO
JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR
MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO
RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV
TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
""".split())

EU: frozenset[str] = frozenset(
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split())
EU_EEA: frozenset[str] = EU | {"IS", "LI", "NO"}

_ALIASES = {"EL": "GR", "UK": "GB"}  # the EU's own abbreviation for Greece; the common one for the UK


def check_country(code: str, what: str = "--country") -> str:
    """The code upper-cased; :class:`InputError` naming the format when it is not an ISO 3166-1 alpha-2 code."""
    value = code.strip().upper()
    value = _ALIASES.get(value, value)
    if value not in ISO_COUNTRIES:
        raise InputError(f"{what} {code.strip()[:8]!r} is not an ISO 3166-1 alpha-2 country code (e.g. DE, IT, NO)")
    return value


def in_eu_eea(country: str) -> bool:
    """Whether ``country`` (an ISO code) is an EU member state or in the EEA."""
    return country.strip().upper() in EU_EEA
