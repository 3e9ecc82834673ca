"""After the VM exits: what the guest wrote through its ivshmem BAR mmap is in the host file."""
import pytest


@pytest.mark.after_guest("test_ivshmem_mmap_sees_host_pattern_and_writes_reach_host")
def test_guest_mmap_writes_reached_the_host_backing_file(after_vm_dir):
    mine = (after_vm_dir / "guest-pattern.bin").read_bytes()
    data = (after_vm_dir / "ivshmem.bin").read_bytes()
    assert data[0x1000: 0x1000 + len(mine)] == mine
    assert data[0x2000: 0x2008] == (0x1122334455667788).to_bytes(8, "little")
    host = (after_vm_dir / "host-pattern.bin").read_bytes()
    assert data[: len(host)] == host  # the guest read it, and left it alone
