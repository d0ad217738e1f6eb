//! Address types, named as the architecture names them.
//!
//! A translation regime turns an *input* address into an *output* address:
//! stage 1 at EL1&0 takes a [`Va`] to an [`Ipa`], stage 1 at EL2 takes a [`Va`]
//! to a [`Pa`], and stage 2 takes an [`Ipa`] to a [`Pa`]. Keeping them apart
//! in the type system stops a guest-physical address being handed where a
//! host-physical one is meant.

use core::fmt;

/// Common behaviour of the address newtypes.
pub trait Address: Copy + Eq + Ord + fmt::Debug + fmt::LowerHex {
    /// Wraps a raw address.
    fn new(raw: u64) -> Self;
    /// The raw address.
    fn get(self) -> u64;
}

macro_rules! address {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(pub u64);

        impl Address for $name {
            #[inline(always)]
            fn new(raw: u64) -> Self {
                Self(raw)
            }
            #[inline(always)]
            fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

address!(
    /// A physical address (the output of stage 2, or of stage 1 at EL2), and
    /// the address the table walker uses to find a table page.
    Pa
);
address!(
    /// An intermediate physical address: a guest's view of physical memory,
    /// the input of stage 2 and the output of stage 1 at EL1&0.
    Ipa
);
address!(
    /// A virtual address: the input of a stage 1 regime.
    Va
);
