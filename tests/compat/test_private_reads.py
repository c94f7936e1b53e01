"""Private attributes of pydicom and highdicom that incisive *reads* (nothing is patched): ``Dataset._dict`` and
``_character_set`` in ``node/deid`` and ``node/ingest`` (a walk over raw elements without pydicom's conversion on
access), the data dictionary and UID registry modules, and highdicom's module tables (``deid/iod.py``, only when
the compact IOD table is regenerated). Each test names the attribute and fails when an upgrade removes it or
changes its shape."""

from __future__ import annotations

import pytest
from pydicom import Dataset
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.tag import BaseTag

from tests.compat.conftest import attr

PORT = "the modules of incisive.node.deid / node.ingest that read it"


def test_dataset_dict_maps_tags_to_elements() -> None:
    ds = Dataset()
    ds.PatientName = "A^B"
    raw = attr(ds, "_dict", PORT)
    assert isinstance(raw, dict), "pydicom Dataset._dict is no longer a dict"
    (tag, elem), = raw.items()
    assert isinstance(tag, BaseTag) and tag == 0x00100010
    assert isinstance(elem, DataElement | RawDataElement) and elem.VR == "PN"


def test_dataset_character_set() -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    assert attr(ds, "_character_set", PORT) == ["UTF8"], "pydicom Dataset._character_set changed"


def test_data_dictionary_and_uid_registry() -> None:
    from pydicom import _dicom_dict, _uid_dict

    entry = attr(_dicom_dict, "DicomDictionary", PORT)[0x00100010]
    assert entry[0] == "PN" and entry[4] == "PatientName", "pydicom._dicom_dict.DicomDictionary entries changed"
    uid = attr(_uid_dict, "UID_dictionary", PORT)["1.2.840.10008.5.1.4.1.1.2"]
    assert uid[0] == "CT Image Storage" and uid[1] == "SOP Class", "pydicom._uid_dict.UID_dictionary changed"


@pytest.mark.parametrize("name", ["get_iod_module_map", "get_module_attribute_map", "get_sop_class_iod_map"])
def test_highdicom_standard_tables(name: str) -> None:
    standard = pytest.importorskip("highdicom._standard_utils")
    assert callable(attr(standard, name, "incisive.node.deid.iod.build"))
