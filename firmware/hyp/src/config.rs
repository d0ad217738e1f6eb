//! The run's configuration: `key=value` words in a text that QEMU's
//! `-device loader` puts at [`CONFIG_ADDR`](crate::layout::CONFIG_ADDR).
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `name` | the run's name, echoed in the report | `run` |
//! | `vcpus` | guest vCPUs (PEs 0..vcpus-1; the DTB must list as many) | 1 |
//! | `worker` | 1: PE `vcpus` runs rounds and migrations on a clock | 0 |
//! | `dirty` | dirty logging rounds | 0 |
//! | `verify` | check the dirty log by checksums (1 vCPU) | 0 |
//! | `verify_every` | full check every N rounds | 4 |
//! | `round_ms` | least time between rounds | 20 |
//! | `migrate` | pages migrated per migration tick | 0 |
//! | `migrate_ms` | least time between migration ticks | 10 |
//! | `migrate_after_s` | no migrations before this many seconds | 0 |
//! | `blocks` | guest RAM as 2 MiB blocks, split on write, collapsed when clean | 0 |
//! | `swap` | pages swapped out per round (needs `dirty`) | 0 |
//! | `control` | `none`, `no-protect-tlbi`, `no-migrate-tlbi`, `local-only`, `ipas2-only` | `none` |
//! | `guest_s` | the guest must power off within this many seconds | 120 |
//! | `quiet` | 1: no per-round progress lines | 0 |
//! | `policy` | the stage 2 invalidation policy: `vmsa` (the planner), or a baseline of `vmsa-baselines` (`kvm`, `xen`, `hafnium`, `freebsd`, `aarch64-paging`, `broadcast`, `none`) | `vmsa` |
//! | `max_rounds` | no dirty-logging rounds after this many (0: no limit) | 0 |
//! | `max_migrations` | no migrations after this many (0: no limit) | 0 |
//! | `oplog` | write the operation log ([`vmsa::oplog`]) to this host path | none |
//! | `oplog_mb` | end the operation log at the first flush past this size | 16 |
//! | `casemate` | write a Casemate trace of the stage 2 to this host path | none |
//! | `casemate_s` | end the trace at the first flush after this many seconds | 2 |
//! | `shared` | 1: spurious faults, and dirty logging's write faults on 4 KiB pages, are handled under the read side of the VM lock, on several vCPUs at once; 0: every fault takes the write side | 1 |
//!
//! An unknown key or a bad value is reported and the run fails before the
//! guest starts.

use crate::layout::{CONFIG_ADDR, CONFIG_MAX, MAX_PES};

/// A negative control: one invalidation deliberately broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Everything as it should be.
    None,
    /// The TLBIs after a round's write-protect are dropped.
    NoProtectTlbi,
    /// The TLBIs at a migration's break are dropped.
    NoMigrateTlbi,
    /// Every TLBI is made local (IPAS2E1, VMALLE1) instead of broadcast.
    LocalOnly,
    /// Migration breaks issue IPAS2E1(IS) without the VMALLE1(IS) after it
    /// (the local forms too: with one vCPU the planner uses them).
    Ipas2Only,
}

impl Control {
    /// The name used in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Control::None => "none",
            Control::NoProtectTlbi => "no-protect-tlbi",
            Control::NoMigrateTlbi => "no-migrate-tlbi",
            Control::LocalOnly => "local-only",
            Control::Ipas2Only => "ipas2-only",
        }
    }
}

/// A short text value (a host path): at most 127 bytes, no spaces.
#[derive(Clone, Copy, Debug)]
pub struct Text {
    bytes: [u8; 128],
    len: usize,
}

impl Text {
    const EMPTY: Text = Text {
        bytes: [0; 128],
        len: 0,
    };

    fn new(key: &str, value: &str) -> Result<Text, alloc::string::String> {
        if value.is_empty() || value.len() >= 128 {
            return Err(alloc::format!("{key}: the value must have 1 to 127 bytes"));
        }
        let mut t = Text::EMPTY;
        t.bytes[..value.len()].copy_from_slice(value.as_bytes());
        t.len = value.len();
        Ok(t)
    }

    /// The text, if set.
    pub fn get(&self) -> Option<&str> {
        (self.len > 0).then(|| core::str::from_utf8(&self.bytes[..self.len]).unwrap_or(""))
    }
}

/// The configuration of a run.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub name: [u8; 32],
    pub name_len: usize,
    pub vcpus: usize,
    pub worker: bool,
    pub dirty: bool,
    pub verify: bool,
    pub verify_every: u64,
    pub round_ms: u64,
    pub migrate: u64,
    pub migrate_ms: u64,
    pub migrate_after_s: u64,
    pub blocks: bool,
    pub swap: u64,
    pub control: Control,
    pub guest_s: u64,
    pub quiet: bool,
    pub policy: Text,
    pub max_rounds: u64,
    pub max_migrations: u64,
    pub oplog: Text,
    pub oplog_mb: u64,
    pub casemate: Text,
    pub casemate_s: u64,
    pub shared: bool,
}

impl Config {
    const DEFAULT: Config = Config {
        name: *b"run\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
        name_len: 3,
        vcpus: 1,
        worker: false,
        dirty: false,
        verify: false,
        verify_every: 4,
        round_ms: 20,
        migrate: 0,
        migrate_ms: 10,
        migrate_after_s: 0,
        blocks: false,
        swap: 0,
        control: Control::None,
        guest_s: 120,
        quiet: false,
        policy: Text::EMPTY,
        max_rounds: 0,
        max_migrations: 0,
        oplog: Text::EMPTY,
        oplog_mb: 16,
        casemate: Text::EMPTY,
        casemate_s: 2,
        shared: true,
    };

    /// The run's name.
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.name_len]).unwrap_or("?")
    }

    /// The stage 2 invalidation policy's name.
    pub fn policy(&self) -> &str {
        self.policy.get().unwrap_or("vmsa")
    }

    /// The PE of the worker, if there is one.
    pub fn worker_pe(&self) -> Option<usize> {
        self.worker.then_some(self.vcpus)
    }

    /// Whether anything changes the stage 2 while the guest runs.
    pub fn live(&self) -> bool {
        self.dirty || self.migrate > 0
    }

    /// Parses `text`.
    ///
    /// # Errors
    /// A message naming the offending word.
    pub fn parse(text: &str) -> Result<Config, alloc::string::String> {
        use alloc::format;
        let mut c = Config::DEFAULT;
        for word in text.split_ascii_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                return Err(format!("'{word}' is not key=value"));
            };
            let num = || -> Result<u64, alloc::string::String> {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{key}: '{value}' is not a number"))
            };
            let flag = || -> Result<bool, alloc::string::String> {
                match value {
                    "0" => Ok(false),
                    "1" => Ok(true),
                    _ => Err(format!("{key}: '{value}' is not 0 or 1")),
                }
            };
            match key {
                "name" => {
                    let n = value.len().min(c.name.len());
                    c.name[..n].copy_from_slice(&value.as_bytes()[..n]);
                    c.name_len = n;
                }
                "vcpus" => c.vcpus = num()? as usize,
                "worker" => c.worker = flag()?,
                "dirty" => c.dirty = flag()?,
                "verify" => c.verify = flag()?,
                "verify_every" => c.verify_every = num()?.max(1),
                "round_ms" => c.round_ms = num()?.max(1),
                "migrate" => c.migrate = num()?,
                "migrate_ms" => c.migrate_ms = num()?.max(1),
                "migrate_after_s" => c.migrate_after_s = num()?,
                "blocks" => c.blocks = flag()?,
                "swap" => c.swap = num()?,
                "guest_s" => c.guest_s = num()?.max(1),
                "quiet" => c.quiet = flag()?,
                "policy" => c.policy = Text::new(key, value)?,
                "max_rounds" => c.max_rounds = num()?,
                "max_migrations" => c.max_migrations = num()?,
                "oplog" => c.oplog = Text::new(key, value)?,
                "oplog_mb" => c.oplog_mb = num()?.clamp(1, 256),
                "casemate" => c.casemate = Text::new(key, value)?,
                "casemate_s" => c.casemate_s = num()?.min(60),
                "shared" => c.shared = flag()?,
                "control" => {
                    c.control = match value {
                        "none" => Control::None,
                        "no-protect-tlbi" => Control::NoProtectTlbi,
                        "no-migrate-tlbi" => Control::NoMigrateTlbi,
                        "local-only" => Control::LocalOnly,
                        "ipas2-only" => Control::Ipas2Only,
                        _ => return Err(format!("control: unknown control '{value}'")),
                    }
                }
                _ => return Err(format!("unknown key '{key}'")),
            }
        }
        let pes = c.vcpus + usize::from(c.worker);
        if c.vcpus == 0 || pes > MAX_PES {
            return Err(format!(
                "vcpus={} worker={}: need 1..={} PEs in all",
                c.vcpus, c.worker as u8, MAX_PES
            ));
        }
        if vmsa_baselines::stage2(c.policy()).is_none() {
            return Err(format!(
                "policy: '{}' is not one of {}",
                c.policy(),
                vmsa_baselines::STAGE2.join(", ")
            ));
        }
        if c.swap > 0 && !c.dirty {
            return Err("swap needs dirty=1 (pages not written since the last round)".into());
        }
        if c.verify && c.vcpus != 1 {
            return Err("verify needs vcpus=1".into());
        }
        Ok(c)
    }

    /// Reads the configuration text from memory.
    pub fn read() -> Result<Config, alloc::string::String> {
        // SAFETY: CONFIG_ADDR..+CONFIG_MAX is RAM this image owns (layout.rs)
        // and nothing writes it while it is read.
        let bytes = unsafe { core::slice::from_raw_parts(CONFIG_ADDR as *const u8, CONFIG_MAX) };
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(CONFIG_MAX);
        let text = core::str::from_utf8(&bytes[..end])
            .map_err(|_| alloc::string::String::from("the configuration is not UTF-8"))?;
        Config::parse(text)
    }
}
