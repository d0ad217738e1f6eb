//! Where everything is in the machine's memory (QEMU virt, `-m 1024M`;
//! `link.ld` places the image).

/// Guest RAM (IPA == PA at start), what the guest's DTB `/memory` says.
pub const RAM_BASE: u64 = 0x4000_0000;
/// Size of guest RAM.
pub const RAM_SIZE: u64 = 0x2000_0000;
/// Guest RAM in 4 KiB pages.
pub const RAM_PAGES: usize = (RAM_SIZE >> 12) as usize;
/// End of all RAM QEMU gives (-m 1024M).
pub const MEM_END: u64 = 0x8000_0000;

/// The heap.
pub const HEAP_BASE: u64 = 0x6200_0000;
/// Its size.
pub const HEAP_SIZE: u64 = 0x0200_0000;
/// Table pages (EL2 stage 1 and the guest's stage 2).
pub const TABLES_BASE: u64 = 0x6400_0000;
/// Table pages available.
pub const TABLE_PAGES: usize = 4096;
/// Spare frames: new homes for migrated and swapped-in guest pages.
pub const FRAMES_BASE: u64 = 0x6500_0000;
/// End of the spare frames.
pub const FRAMES_END: u64 = 0x7000_0000;
/// The swap pool: contents of swapped-out pages.
pub const SWAP_BASE: u64 = 0x7000_0000;
/// Swap slots (4 KiB each).
pub const SWAP_SLOTS: usize = 4096;
/// The configuration text (NUL-terminated or zero-filled), put there by
/// `-device loader,file=...,addr=0x7ff00000,force-raw=on`.
pub const CONFIG_ADDR: u64 = 0x7ff0_0000;
/// Largest configuration text read.
pub const CONFIG_MAX: usize = 4096;

/// The guest kernel Image (loaded by QEMU), 2 MiB aligned.
pub const KERNEL: u64 = 0x4020_0000;
/// The guest's DTB.
pub const DTB: u64 = 0x4400_0000;

/// Device MMIO the guest may reach (identity, Device-nGnRE): the low GiB
/// (GIC, UART, RTC, GPIO, fw_cfg, virtio-mmio, PCIe MMIO) and the high
/// PCIe ECAM at 256 GiB.
pub const GUEST_DEVICES: [(u64, u64); 2] = [(0, 0x4000_0000), (256 << 30, 257 << 30)];

/// MMIO the hypervisor itself uses: GIC and PL011 (0x0800_0000..0x0a00_0000).
pub const EL2_DEVICES: (u64, u64) = (0x0800_0000, 0x0a00_0000);

/// PEs this image supports (vCPUs and the worker).
pub const MAX_PES: usize = 4;

/// Whether `ipa` is guest RAM.
pub fn is_ram(ipa: u64) -> bool {
    (RAM_BASE..RAM_BASE + RAM_SIZE).contains(&ipa)
}
