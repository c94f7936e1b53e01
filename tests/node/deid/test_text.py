import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from incisive.node.deid.text import _VOCABULARY, clean_text

UNITS = {"mm", "cm", "m", "ms", "s", "sec", "min", "kv", "kvp", "mas", "ma", "t", "x", "ml", "mgy", "gy", "hu",
         "deg", "mhz"}
_UNIT = "|".join(sorted(UNITS, key=len, reverse=True))
MEASUREMENT = re.compile(rf"[0-9]{{1,4}}(?:\.[0-9]{{1,3}})?(?:{_UNIT}|%)?|t[0-9]{{1,2}}|b[0-9]{{1,4}}")


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("CT THORAX f/u J. Smith 12/03/2021", "CT THORAX"),
        ("T2-FLAIR AX 5mm 2.5", "T2 FLAIR AX 5MM 2.5"),
        ("MR BRAIN for Maria Garcia-Lopez MRN 123456", "MR BRAIN FOR"),
        ("Mammo 12.03.21 LCC RMLO 2019", "LCC RMLO"),
        ("seen 2021-03-12 10:42 by Dr. Who", ""),
        ("", ""),
    ],
)
def test_allow_list_cleaning(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x24F), max_size=80))
def test_output_only_holds_vocabulary_or_measurements(raw: str) -> None:
    out = clean_text(raw)
    assert len(out) <= max(len(raw) * 2, 1)
    for token in out.split():
        low = token.lower()
        # the allow-list's own words, or a measurement (written out here, not taken from the cleaner)
        assert low in _VOCABULARY or MEASUREMENT.fullmatch(low) or low in UNITS, token
        assert low in raw.lower() or low.rstrip("%") in raw.lower(), f"{token} is not from the input"
        assert not (len(token) >= 5 and token.isdigit())  # no id- or date-like digit runs


@given(st.lists(st.sampled_from(["ct", "Thorax", "axial", "5mm", "t2", "120", "kV", "Smith", "jane", "MRN",
                                 "7734521", "f/u", "Doe", "PACS", "ward", "Garcia-Lopez", "b1000", "x"]),
                max_size=12).map(" ".join))
def test_only_allow_listed_words_survive(raw: str) -> None:
    """Words that are neither imaging vocabulary nor measurements (names, ids, hospital jargon) never survive."""
    kept = set(clean_text(raw).lower().split())
    assert not kept & {"smith", "jane", "mrn", "7734521", "f/u", "doe", "pacs", "ward", "garcia-lopez", "garcia",
                       "lopez", "f", "u"}
    for word in ("ct", "thorax", "axial", "5mm", "t2", "b1000"):
        assert (word in kept) == (word in raw.lower().split())


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("phone 555 1234 5678", ""),  # digit groups are ids and phone numbers, not measurements
        ("CT 120 kV 5 mm 512 slices", "CT 120 KV 5 MM SLICES"),
        ("120kV 2.5% 3.0 T2 b1000 1.5T", "120KV 2.5% 3.0 T2 B1000 1.5T"),
        ("ref 20210312 acc 7734521", ""),
        ("write to jane.doe@hospital.org or see https://pacs.hospital.org/ct/123", "TO OR"),
        ("CHEST 12 March 2021, March 12th 2021, Mar 2021, 12-03-2021, 2021/03/12", "CHEST"),
    ],
)
def test_cleaner_drops_numbers_contacts_and_dates(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


def test_cleaner_drops_names_even_when_they_are_imaging_words() -> None:
    assert clean_text("HEAD NECK CT Bone", frozenset({"bone", "head"})) == "NECK CT"
    assert clean_text("T2-HEAD", frozenset({"head"})) == "T2"
