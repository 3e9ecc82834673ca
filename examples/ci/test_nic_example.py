"""An example of a user's hardware test, run by hw-test.sh through vfioctl's pytest plugin."""


def test_vf_answers_with_its_ids(vfio_session, vfio_device):
    cfg = vfio_session.device.config
    assert f"{cfg.read(0, 2):04x}:{cfg.read(2, 2):04x}" == vfio_device.ids


def test_vf_bar0_reads(vfio_session):
    assert vfio_session.region("bar0").read(0x8, 4) != 0xFFFFFFFF  # STATUS
