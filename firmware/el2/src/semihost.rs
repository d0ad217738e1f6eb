//! Arm semihosting (QEMU `-semihosting`): leaving the emulator with a
//! status, and writing files on the host (the hypervisor's operation logs
//! and traces).

/// SYS_OPEN.
const SYS_OPEN: u64 = 0x01;
/// SYS_CLOSE.
const SYS_CLOSE: u64 = 0x02;
/// SYS_WRITE.
const SYS_WRITE: u64 = 0x05;
/// SYS_EXIT.
const SYS_EXIT: u64 = 0x18;
/// ADP_Stopped_ApplicationExit: with the AArch64 parameter block, the
/// second word is the exit status.
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;
/// SYS_OPEN mode 5: ISO C `fopen` mode "wb".
const MODE_WB: u64 = 5;

/// One semihosting call: operation `op`, parameter block at `block`.
fn call(op: u64, block: *const u64) -> u64 {
    let r: u64;
    // SAFETY: the host reads the parameter block (and the memory it points
    // at) and writes nothing of ours; with semihosting off the HLT traps.
    unsafe {
        core::arch::asm!(
            "hlt #0xf000",
            inout("x0") op => r,
            in("x1") block,
            options(nostack)
        );
    }
    r
}

/// Ends the emulation with exit status `code`.
pub fn exit(code: u32) -> ! {
    let block = [ADP_STOPPED_APPLICATION_EXIT, u64::from(code)];
    call(SYS_EXIT, block.as_ptr());
    // Without semihosting the call returns (or traps): park the PE.
    loop {
        // SAFETY: waiting for an interrupt has no memory effects.
        unsafe { core::arch::asm!("wfe", options(nomem, nostack)) };
    }
}

/// A file on the host, opened for writing (created or truncated).
pub struct HostFile {
    handle: u64,
}

/// A host file operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostIoError;

impl HostFile {
    /// Creates (or truncates) `path` on the host, relative to QEMU's
    /// working directory.
    ///
    /// # Errors
    /// [`HostIoError`] when the host refuses.
    pub fn create(path: &str) -> Result<HostFile, HostIoError> {
        // The host wants a NUL-terminated name and its length without NUL.
        let mut name = [0u8; 256];
        if path.len() >= name.len() {
            return Err(HostIoError);
        }
        name[..path.len()].copy_from_slice(path.as_bytes());
        let block = [name.as_ptr() as u64, MODE_WB, path.len() as u64];
        let h = call(SYS_OPEN, block.as_ptr());
        if h as i64 == -1 {
            return Err(HostIoError);
        }
        Ok(HostFile { handle: h })
    }

    /// Writes all of `bytes`.
    ///
    /// # Errors
    /// [`HostIoError`] when the host wrote less.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), HostIoError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let block = [self.handle, bytes.as_ptr() as u64, bytes.len() as u64];
        // The call returns how many bytes were NOT written.
        match call(SYS_WRITE, block.as_ptr()) {
            0 => Ok(()),
            _ => Err(HostIoError),
        }
    }
}

impl Drop for HostFile {
    fn drop(&mut self) {
        let block = [self.handle];
        call(SYS_CLOSE, block.as_ptr());
    }
}

/// A buffered host file with a size bound: what the hypervisor writes its
/// logs into. Writing past the bound (or after a host error) drops the
/// rest and says so in [`truncated`](Self::truncated).
pub struct BufferedHostFile {
    file: HostFile,
    buf: alloc::vec::Vec<u8>,
    written: u64,
    limit: u64,
    truncated: bool,
}

impl BufferedHostFile {
    /// Creates `path` with a buffer of `buffer` bytes, keeping at most
    /// `limit` bytes.
    ///
    /// # Errors
    /// [`HostIoError`] when the host refuses to create it.
    pub fn create(path: &str, buffer: usize, limit: u64) -> Result<Self, HostIoError> {
        Ok(BufferedHostFile {
            file: HostFile::create(path)?,
            buf: alloc::vec::Vec::with_capacity(buffer),
            written: 0,
            limit,
            truncated: false,
        })
    }

    /// Appends `bytes` (all or nothing, within the bound).
    pub fn put(&mut self, bytes: &[u8]) {
        if self.truncated {
            return;
        }
        if self.written + (self.buf.len() + bytes.len()) as u64 > self.limit {
            self.truncated = true;
            return;
        }
        if self.buf.len() + bytes.len() > self.buf.capacity() {
            self.flush();
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Whether the bound was reached (or the host failed) and data dropped.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Bytes in the file and the buffer.
    pub fn len(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the buffer out.
    pub fn flush(&mut self) {
        if self.file.write(&self.buf).is_err() {
            self.truncated = true;
        }
        self.written += self.buf.len() as u64;
        self.buf.clear();
    }
}

impl Drop for BufferedHostFile {
    fn drop(&mut self) {
        self.flush();
    }
}

impl vmsa::oplog::Sink for BufferedHostFile {
    fn put(&mut self, bytes: &[u8]) {
        BufferedHostFile::put(self, bytes);
    }
}

impl core::fmt::Write for BufferedHostFile {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.put(s.as_bytes());
        Ok(())
    }
}
