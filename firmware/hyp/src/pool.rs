//! TEMPORARY stand-in until vmsa::PagePool lands.
use core::ptr::NonNull;
use vmsa::{Error, Granule, Pa, TableAllocator};
use vmsa_el2::spin::{Mutex, Once};
use crate::layout::{TABLES_BASE, TABLE_PAGES};
pub struct PagePool { used: Mutex<alloc::vec::Vec<bool>>, base: u64 }
impl PagePool {
    pub fn live(&self) -> usize { self.used.lock().iter().filter(|u| **u).count() }
    pub fn peak(&self) -> usize { 0 }
}
unsafe impl TableAllocator for &PagePool {
    fn allocate_zeroed(&mut self, _g: Granule, pages: usize) -> Result<Pa, Error> {
        let mut u = self.used.lock();
        let mut i = 0;
        while i + pages <= u.len() {
            if u[i..i + pages].iter().all(|x| !x) {
                for k in i..i + pages { u[k] = true; }
                let pa = self.base + i as u64 * 4096;
                unsafe { core::ptr::write_bytes(pa as *mut u8, 0, pages * 4096) };
                return Ok(Pa(pa));
            }
            i += pages;
        }
        Err(Error::OutOfMemory)
    }
    unsafe fn deallocate(&mut self, pa: Pa, _g: Granule, pages: usize) {
        let i = ((pa.0 - self.base) / 4096) as usize;
        let mut u = self.used.lock();
        for k in i..i + pages { u[k] = false; }
    }
    fn to_ptr(&self, pa: Pa) -> NonNull<u64> { NonNull::new(pa.0 as *mut u64).unwrap() }
}
static POOL: Once<PagePool> = Once::new();
pub type Pool = &'static PagePool;
pub fn pool() -> Pool {
    POOL.call_once(|| PagePool { used: Mutex::new(alloc::vec![false; TABLE_PAGES]), base: TABLES_BASE })
}
