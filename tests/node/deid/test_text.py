import pytest
from hypothesis import given
from hypothesis import strategies as st

from incisive.node.deid.text import clean_text


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
        assert token.isupper() or any(c.isdigit() for c in token)
        assert not (len(token) >= 5 and token.isdigit())  # no id- or date-like digit runs


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
