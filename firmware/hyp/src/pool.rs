//! The table pages every table of this hypervisor draws from: vmsa's
//! freeing, lock-free [`PagePool`](vmsa::PagePool) over a fixed region.

use vmsa::{Pa, PagePool};
use vmsa_el2::spin::Once;

use crate::layout::{TABLES_BASE, TABLE_PAGES};

static POOL: Once<PagePool> = Once::new();

/// A handle on the pool (a table holds one).
pub type Pool = &'static PagePool;

/// The pool, made on first use.
pub fn pool() -> Pool {
    POOL.call_once(|| {
        // SAFETY: TABLES_BASE..+TABLE_PAGES pages is RAM reserved for table
        // pages (layout.rs), identity mapped (PA == VA), used by nothing else.
        unsafe { PagePool::new(TABLES_BASE as *mut u8, Pa(TABLES_BASE), TABLE_PAGES) }
    })
}
