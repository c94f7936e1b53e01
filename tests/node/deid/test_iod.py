from importlib import resources

from pydicom.datadict import tag_for_keyword

from incisive.node.deid import iod


def test_shipped_table_is_what_the_installed_highdicom_gives() -> None:
    shipped = resources.files("incisive.node.deid").joinpath("data", iod.DATA_FILE).read_bytes()
    assert shipped == iod.encode(iod.build()), "regenerate: python -m incisive.node.deid.iod"


def test_requirements_follow_the_iod() -> None:
    def level(sop_class: str, keyword: str, parent: str = "") -> str | None:
        key = (int(tag_for_keyword(parent)) if parent else 0, int(tag_for_keyword(keyword)))
        return iod.requirements(sop_class).get(key)

    ct, enhanced_ct = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1"
    rt_plan = "1.2.840.10008.5.1.4.1.1.481.5"
    assert level(ct, "ImageType") == iod.REQUIRED and level(ct, "AccessionNumber") == iod.PRESENT
    assert level(ct, "DeviceSerialNumber") is None and level(enhanced_ct, "DeviceSerialNumber") == iod.REQUIRED
    assert level(rt_plan, "RTPlanLabel") == iod.REQUIRED
    assert level("1.2.840.10008.5.1.4.1.1.88.33", "TextValue", "ContentSequence") == iod.REQUIRED
    assert iod.iod_name(ct) == "ct-image" and iod.iod_name("1.2.3.4") is None
    assert level("1.2.3.4", "ImageType") == iod.REQUIRED  # unknown class: every IOD's rules at once
