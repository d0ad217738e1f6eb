//! Hierarchical controls of stage 1 table descriptors.

bitflags::bitflags! {
    /// The hierarchical attributes of a stage 1 table descriptor (ARM ARM
    /// D8.3.1, "Table descriptor" and D8.4.2 "Hierarchical control of
    /// access permissions"): they restrict everything mapped below the
    /// table. In stage 2 table descriptors bits \[63:59\] are RES0, so a
    /// stage 2 table always uses the empty set.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct TableAttrs: u64 {
        /// Bit 59, PXNTable: no privileged execution below this table.
        const PXN_TABLE = 1 << 59;
        /// Bit 60, UXNTable (XNTable in single-range regimes): no
        /// unprivileged execution below this table.
        const UXN_TABLE = 1 << 60;
        /// Bit 61, APTable\[0\]: no EL0 access below this table.
        const AP_TABLE_NO_EL0 = 1 << 61;
        /// Bit 62, APTable\[1\]: no write access below this table.
        const AP_TABLE_READ_ONLY = 1 << 62;
        /// Bit 63, NSTable (Secure state only).
        const NS_TABLE = 1 << 63;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ARM ARM D8.3.1, table descriptor: NSTable bit 63, APTable bits
    // [62:61], UXNTable/XNTable bit 60, PXNTable bit 59.
    #[test]
    fn bit_positions() {
        assert_eq!(TableAttrs::PXN_TABLE.bits(), 0x0800_0000_0000_0000);
        assert_eq!(TableAttrs::UXN_TABLE.bits(), 0x1000_0000_0000_0000);
        assert_eq!(TableAttrs::AP_TABLE_NO_EL0.bits(), 0x2000_0000_0000_0000);
        assert_eq!(TableAttrs::AP_TABLE_READ_ONLY.bits(), 0x4000_0000_0000_0000);
        assert_eq!(TableAttrs::NS_TABLE.bits(), 0x8000_0000_0000_0000);
    }
}
